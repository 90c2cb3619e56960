"""Rank 0's side of multi-GPU sampling: the worker processes, their process group and what is sent to them.

Workers are plain subprocesses (`worker.py`, run by file path so the pack's folder name does not matter), not
`multiprocessing` children: a spawned child re-imports the parent's `__main__`, which in ComfyUI is `main.py`.
Commands go through each worker's stdin (an idle worker waits there, never inside a collective, and exits when rank 0
dies); tensors of the sequence split go through the process group, whose timeout bounds every collective.
"""
from __future__ import annotations

import atexit
import logging
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from . import comm
from .transfer import broadcast_tensors, skeleton_of, specs_of

log = logging.getLogger("dit_accel")

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]          # the pack's folder (any name)
PACKAGE_NAME = __name__.rsplit(".accel.parallel.pool", 1)[0]  # how this process imported it


@dataclass(frozen=True)
class PoolConfig:
    """world_size: ranks including this process. device: "cpu" (gloo, one process per rank) or "cuda" (NCCL, rank r
    on devices[r]). timeout_s: the longest any collective may wait for another rank (a dead or stuck worker).
    threads: torch CPU threads per worker (CPU runs)."""

    world_size: int = 2
    device: str = "cpu"
    devices: tuple[int, ...] = ()
    timeout_s: float = 60.0
    threads: int = 1
    # A script each worker runs before importing the pack (the ComfyUI boundary uses it to give the worker rank 0's
    # command-line settings), and environment variables for it.
    prelude: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    # Functions each worker calls once the pack is imported, as "module.path:function" inside the pack (the ComfyUI
    # boundary registers our quantized-weight layouts with core there, as loading them does in rank 0).
    setup: tuple[str, ...] = ()

    @property
    def backend(self) -> str:
        return "nccl" if self.device == "cuda" else "gloo"


def check_devices(config: PoolConfig) -> None:
    """Refuse clearly when fewer devices are visible than asked."""
    if config.device != "cuda":
        return
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    wanted = config.devices or tuple(range(config.world_size))
    if len(wanted) != config.world_size or visible < config.world_size or max(wanted) >= visible:
        raise comm.ParallelError(
            f"DiT Multi-GPU asks for {config.world_size} CUDA devices {list(wanted)} but torch sees {visible}; "
            "lower the device count, or check CUDA_VISIBLE_DEVICES")


class WorkerPool:
    """Ranks 1..P-1, started once and reused across runs until `shutdown()` (or interpreter exit)."""

    def __init__(self, config: PoolConfig):
        check_devices(config)
        self.config = config
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Any] = []
        self.model_key: tuple | None = None
        self._start()
        atexit.register(_shutdown_ref, weakref.ref(self))

    # ---- lifecycle ------------------------------------------------------------------------------------------
    def _start(self) -> None:
        cfg = self.config
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
               "OMP_NUM_THREADS": str(cfg.threads), **dict(cfg.env)}
        for rank in range(1, cfg.world_size):
            log_file = tempfile.TemporaryFile()
            device = f"cuda:{(cfg.devices or tuple(range(cfg.world_size)))[rank]}" if cfg.device == "cuda" else "cpu"
            cmd = [sys.executable, str(WORKER_SCRIPT), str(PACKAGE_ROOT), PACKAGE_NAME, str(rank), str(cfg.world_size),
                   str(port), cfg.backend, device, str(cfg.timeout_s), str(cfg.threads), cfg.prelude or "",
                   ",".join(cfg.setup)]
            self.procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log_file, stderr=log_file,
                                               env=env))
            self.logs.append(log_file)
        if cfg.device == "cuda":
            torch.cuda.set_device((cfg.devices or (0,))[0])
        try:
            comm.init_group(0, cfg.world_size, port, cfg.backend, cfg.timeout_s)
        except Exception as err:
            self.shutdown()
            raise comm.ParallelError(f"DiT Multi-GPU: the workers did not join within {comm.STARTUP_TIMEOUT_S:.0f} s "
                                     f"({type(err).__name__}: {err})") from err
        log.info("dit-accel multi-gpu: %d worker process(es) started (%s)", cfg.world_size - 1, cfg.backend)

    @property
    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs) and comm.group() is not None

    def shutdown(self) -> None:
        """Stop every worker (politely, then by force) and drop the process group."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    self._write(proc, ("exit",))
                except comm.ParallelError:
                    pass
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in self.logs:
            f.close()
        self.procs, self.logs, self.model_key = [], [], None
        comm.destroy_group()

    # ---- commands -------------------------------------------------------------------------------------------
    def _write(self, proc: subprocess.Popen, message: tuple) -> None:
        try:
            pickle.dump(message, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as err:
            raise comm.ParallelError(self.failure(f"could not send {message[0]!r}")) from err

    def send(self, message: tuple) -> None:
        dead = [r for r, p in enumerate(self.procs, 1) if p.poll() is not None]
        if dead:
            raise comm.ParallelError(self.failure(f"before {message[0]!r}"))
        for proc in self.procs:
            self._write(proc, message)

    def load_model(self, model: torch.nn.Module) -> bool:
        """Give every worker a replica of `model`; False (nothing sent) when they already hold this very model."""
        key = _model_key(model)
        if key == self.model_key:
            return False
        skeleton, tensors = skeleton_of(model)
        self.send(("load", skeleton, specs_of(tensors)))
        self.collective(lambda: broadcast_tensors(tensors, self._device()), "sending the weights")
        self.model_key = key
        return True

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.config.device == "cuda" else \
            torch.device("cpu")

    def start_run(self, patches: tuple) -> None:
        """The run's full configuration: every patch of the host (switched-off ones too); workers rebuild their
        host and state from it, so nothing survives from a previous run. Then every rank lays out the run's mesh."""
        from .ulysses import cfg_groups_of
        self.send(("run", patches))
        self.collective(lambda: comm.use_mesh(cfg_groups_of(patches)), "laying out the run's ranks")

    def call(self, args: tuple, kwargs: dict, to_slot: int | str, portable_options: dict) -> None:
        self.send(("call", _to_cpu(args), _to_cpu(kwargs), to_slot, _to_cpu(portable_options)))

    def end_run(self) -> None:
        if self.procs and all(p.poll() is None for p in self.procs):
            self.send(("end",))

    def collective(self, fn, what: str):
        """Run a collective of rank 0; a failure (dead worker, timeout) becomes a clear error and kills the pool."""
        try:
            return fn()
        except Exception as err:
            lost = _is_communication_error(err) or any(p.poll() is not None for p in self.procs)
            message = self.failure(what)
            self.shutdown()  # the workers wait inside a collective this rank will never join: restart them
            if lost:
                raise comm.ParallelError(message) from err
            raise  # this rank's own error (a model or patch error): the caller sees it as it is

    def failure(self, what: str) -> str:
        """A message naming the worker that failed, its exit code and the last lines it wrote."""
        parts = []
        for rank, (proc, log_file) in enumerate(zip(self.procs, self.logs), 1):
            code = proc.poll()
            log_file.seek(0)
            tail = [line for line in log_file.read().decode(errors="replace").strip().splitlines()
                    if line.strip()][-3:]
            state = f"exited with code {code}" if code is not None else "still running"
            if code is not None or tail:
                parts.append(f"worker rank {rank} {state}" + (f": {' | '.join(tail)}" if tail else ""))
        if not any(p.poll() is not None for p in self.procs):
            parts.insert(0, f"a worker did not answer within {self.config.timeout_s:.0f} s")
        who = "; ".join(parts)
        return f"DiT Multi-GPU failed {what}: {who}. The workers are stopped; the next run starts new ones."


def _is_communication_error(err: Exception) -> bool:
    # NCCL raises DistError subclasses; gloo raises plain RuntimeErrors that quote its own source path.
    text = str(err)
    return isinstance(err, getattr(dist, "DistError", ())) or "gloo" in text or "NCCL" in text or "Timed out" in text


def portable_options(transformer_options: dict, drop: tuple[str, ...]) -> dict:
    """The sampler's data in a call's transformer_options (sigmas, cond_or_uncond, ...), without functions, patches
    or our own objects: what a worker needs to rebuild the same step context."""
    out = {}
    for key, value in transformer_options.items():
        if key in drop or key in ("patches", "patches_replace", "wrappers", "callbacks",
                                  "optimized_attention_override"):
            continue
        if _is_data(value):
            out[key] = value
    return out


def _is_data(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_data(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_data(v) for k, v in value.items())
    return False


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj


def _model_key(model: torch.nn.Module) -> tuple:
    # The object and its weights' storage: a reloaded or re-patched (LoRA) model gets new storage or a new object.
    return (id(model), tuple(t.data_ptr() for t in model.state_dict().values())[:64])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shutdown_ref(ref) -> None:
    pool = ref()
    if pool is not None and pool.procs:
        pool.shutdown()
