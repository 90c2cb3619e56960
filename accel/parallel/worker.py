"""A worker rank: holds a model replica and runs every model call of a run on its shard of the image tokens.

Started by `pool.WorkerPool` as `python worker.py <pack folder> <package name> <rank> <world> <port> <backend>
<device> <timeout_s> <threads> <prelude script or ''> <setup functions, comma-separated, or ''>`; reads pickled
commands from stdin until "exit" or end of file (rank 0 gone). Any error is printed to stderr and ends the process: rank 0's next collective then fails with that
message.
"""
from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
import traceback
from pathlib import Path


def _import_package(root: str, name: str):
    """Import the pack under the name rank 0 uses, from its folder (ComfyUI loads it by path, any folder name)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, str(Path(root) / "__init__.py"),
                                                  submodule_search_locations=[root])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def serve(package: str, rank: int, world: int, port: int, backend: str, device: str, timeout_s: float) -> None:
    import torch

    comm = importlib.import_module(f"{package}.accel.parallel.comm")
    transfer = importlib.import_module(f"{package}.accel.parallel.transfer")
    host_mod = importlib.import_module(f"{package}.accel.host")
    registry = importlib.import_module(f"{package}.accel.adapters.registry")
    cfg_split = importlib.import_module(f"{package}.accel.parallel.cfg_split")
    ulysses = importlib.import_module(f"{package}.accel.parallel.ulysses")
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    comm.init_group(rank, world, port, backend, timeout_s)
    stdin = sys.stdin.buffer
    model = host = run = None
    installed: dict = {}
    try:
        while True:
            try:
                message = pickle.load(stdin)
            except EOFError:
                return  # rank 0 exited
            kind = message[0]
            if kind == "exit":
                return
            if kind == "load":
                tensors = transfer.allocate(message[2], dev)
                transfer.broadcast_tensors(tensors, dev)
                model = transfer.rebuild(message[1], tensors).eval()
            elif kind == "run":
                if run is not None:  # the previous run never got its "end" (rank 0 failed mid-run)
                    host.end_run(run)
                host = host_mod.AccelHost(registry.adapter_for(model), tuple(message[1]))
                installed = {}
                host.install(installed, model)
                run = host.start_run()
                comm.use_mesh(ulysses.cfg_groups_of(message[1]))
            elif kind == "call":
                _, args, kwargs, slot, options = message
                args, kwargs = _to(args, dev), _to(kwargs, dev)
                to = {**installed, **_to(options, dev), host_mod.RUN_KEY: run}
                if isinstance(slot, int):
                    args = args[:slot] + (to,) + args[slot + 1:]
                else:
                    kwargs[slot] = to
                blocks = len(host.adapter.block_layout(model))

                def forward(a, k, slot=slot):
                    local = a[slot] if isinstance(slot, int) else k[slot]
                    x = host.adapter.model_input(a, k)  # the family's batch-carrying input (LTX-2: the video)
                    host.begin_call(local, x)
                    return host.call_model(local, x, blocks, lambda: model(*a, **k))

                with torch.no_grad():
                    cfg_split.call_shared(args, kwargs, slot, forward)
            elif kind == "end":
                if run is not None:
                    host.end_run(run)
                run = None
            else:
                raise ValueError(f"unknown command {kind!r}")
    finally:
        comm.destroy_group()


def _to(obj, device):
    import torch
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device) for v in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def main(argv: list[str]) -> int:
    root, package, rank, world, port, backend, device, timeout_s, threads, prelude, setup = argv
    import faulthandler
    import runpy
    import signal

    import torch
    # `kill -USR1 <pid>` prints where a stuck worker waits (into the log rank 0 quotes in its error).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    torch.set_num_threads(int(threads))
    if prelude:
        runpy.run_path(prelude, run_name="dit_accel_worker_prelude")
    _import_package(root, package)
    for target in filter(None, setup.split(",")):
        module, function = target.split(":")
        getattr(importlib.import_module(f"{package}.{module}"), function)()
    try:
        serve(package, int(rank), int(world), int(port), backend, device, float(timeout_s))
    except Exception:  # noqa: BLE001 - the message is for rank 0's error, which quotes our last lines
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
