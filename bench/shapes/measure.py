"""What the shapes bench measures: state bytes at the full shape, the unpatched forward's activation peak, and wall
against compute speed (with the per-step overhead) on CPU at the shape's real width.

State bytes come from each method's own accounting: `memory_fit` runs the method's hooks at a few tokens with the
shape's width, depth, rows and dtype and extrapolates its allocations to the full token count (`accel/memory.py`;
`tests/bench/test_shapes.py` checks that against a real run). The activation peak is the largest sum of live tensor
bytes during one unpatched forward at the full shape under FakeTensorMode (no memory is used): Wan runs our reference
implementation, the other families blocks with their layer sizes (`standin.py`), one block of each kind (inference
keeps one block's activations at a time; weights are not counted).
"""
from __future__ import annotations

import statistics
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ...accel.adapters.registry import adapter_for
from ...accel.host import AccelHost
from ...accel.memory import GiB
from ...accel.standalone import accelerated
from ...reference.sampling import sample_euler_cfg, simple_schedule
from ...reference.wan_dit import WanConfig, WanDiT
from .methods import build
from .standin import DualStreamBlock, SingleStreamBlock
from .table import Shape

# A 24 GB card holding Wan 14B in fp8 (about 14 GB of weights) has about 8-10 GB free while sampling; at 10 GiB free the
# automatic budget is its 1 GiB cap (accel/memory.py).
CONSUMER_FREE = 10 * GiB
SCHEDULE_STEPS = 50


def state_report(shape: Shape, method: str, free_memory: int | None = CONSUMER_FREE,
                 total_steps: int = SCHEDULE_STEPS) -> dict:
    """The method at the node's defaults: bytes as configured and within the default budget on a GPU."""
    patch = build(method, shape)
    result = patch.memory_fit(shape.state_shape(), free_memory, total_steps, torch.device("cuda"))
    return {"shape": shape.name, "method": method, "configured_bytes": result.wanted_bytes,
            "default_bytes": result.device_bytes, "offloaded_bytes": result.host_bytes,
            "budget_bytes": result.budget.limit, "fits": result.fits, "degraded": list(result.steps),
            "plan": result.describe()}


class LiveBytes(TorchDispatchMode):
    """The peak of live tensor storage bytes created under it (each storage counted once, freed when collected)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key not in self._sizes:
                    self._sizes[key] = storage.nbytes()
                    self.live += self._sizes[key]
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key)
        return out

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)


def activation_peak(shape: Shape) -> int:
    """Peak activation bytes of one unpatched forward at the full shape (FakeTensorMode: nothing is allocated)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    default = torch.get_default_dtype()
    with FakeTensorMode():
        torch.set_default_dtype(shape.dtype)
        try:
            run = _wan_forward(shape) if shape.family == "wan" else _joint_forward(shape)
        finally:
            torch.set_default_dtype(default)
        tracker = LiveBytes()
        with torch.no_grad(), tracker:
            run()
    return tracker.peak


def _wan_forward(shape: Shape):
    cfg = WanConfig(dim=shape.width, ffn_dim=shape.ffn, num_layers=1)
    model = WanDiT(cfg)
    model.patch_embedding = torch.nn.Conv3d(cfg.in_dim, cfg.dim, cfg.patch_size, cfg.patch_size,
                                            dtype=torch.float32)  # it runs in fp32, as ComfyUI's does
    x = torch.randn(shape.rows, *shape.latent, dtype=shape.dtype)
    context = torch.randn(shape.rows, 512, cfg.text_dim, dtype=shape.dtype)
    return lambda: model(x, torch.ones(shape.rows), context, {})


def _joint_forward(shape: Shape):
    kinds = [kind for kind, _ in shape.blocks]
    img = torch.randn(shape.rows, shape.image_tokens, shape.width)
    txt = torch.randn(shape.rows, shape.text_tokens, shape.width)
    vec = torch.randn(shape.rows, shape.width)
    dual = DualStreamBlock(shape.width, shape.heads, shape.ffn)
    single = SingleStreamBlock(shape.width, shape.heads, shape.ffn) if len(kinds) > 1 else None

    def forward():
        i, t = dual(img, txt, vec)
        if single is not None:
            single(torch.cat([t, i], dim=1), vec)
    return forward


# ---- wall against compute on CPU ------------------------------------------------------------------------------

def speed_model(shape: Shape, depth: int = 2, seed: int = 0) -> WanDiT:
    """Our Wan implementation at the shape's width and FFN, `depth` blocks, random weights (Wan shapes only)."""
    if shape.family != "wan":
        raise SystemExit(f"the CPU speed run needs a Wan shape (our reference implementation); {shape.name} is "
                         f"{shape.family}")
    torch.manual_seed(seed)
    model = WanDiT(WanConfig(dim=shape.width, ffn_dim=shape.ffn, num_layers=depth)).eval()
    torch.nn.init.normal_(model.head.head.weight, std=0.02)  # Wan's zero-initialised head would output zeros
    return model


def speed_report(shape: Shape, methods: list[str], depth: int = 2, height: int = 60, width: int = 104,
                 steps: int = 10, seeds: int = 1, device: str = "cpu") -> list[dict]:
    """Full model and each method on the same noise, interleaved per seed, at `height` x `width` latent pixels of one
    frame (60 x 104: 1,560 tokens). Per call: wall time and whether its blocks ran, so a skipped or forecast step's
    cost is measured against a computed step's in the same run."""
    model = speed_model(shape, depth).to(device)
    adapter = adapter_for(model)
    sigmas = simple_schedule(steps)
    context = torch.randn(1, 32, model.cfg.text_dim, device=device)
    walls: dict[str, list[float]] = {m: [] for m in ["full", *methods]}
    calls: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    ratio: dict[str, float] = {}
    for seed in range(seeds):
        noise = torch.randn(1, 16, 1, height, width, generator=torch.Generator().manual_seed(seed)).to(device)
        for name in walls:
            with torch.no_grad():
                start = time.perf_counter()
                if name == "full":
                    sample_euler_cfg(lambda x, t, c, o: model(x, t, c, o), noise, context, context * 0, sigmas, 4.0)
                else:
                    host = AccelHost(adapter, (build(name, shape),))
                    with accelerated(host, model) as (model_fn, run, _):
                        timed = _timed(model_fn, run, calls[name])
                        sample_euler_cfg(timed, noise, context, context * 0, sigmas, 4.0)
                    ratio[name] = run.ledger.block_speedup
                walls[name].append(time.perf_counter() - start)
    full = statistics.median(walls["full"])
    out = []
    for name in methods:
        computed = [w for w, share in calls[name] if share >= 1.0]
        skipped = [w for w, share in calls[name] if share < 1.0]  # forecast, or (block cache) mostly reused
        wall = full / statistics.median(walls[name])
        out.append({"shape": shape.name, "method": name, "depth": depth, "tokens": (height // 2) * (width // 2),
                    "steps": steps, "seeds": seeds, "speedup_compute": ratio[name], "speedup_wall": wall,
                    "wall_over_compute": wall / ratio[name],
                    "skipped_step_cost": statistics.median(skipped) / statistics.median(computed)
                    if skipped and computed else None})
    return out


def _timed(model_fn, run, record: list):
    """Wrap a model function: (wall seconds, share of its block evaluations that ran) per call."""
    def call(x, t, c, o):
        before_run, before_total = run.ledger.blocks_run, run.ledger.blocks_total
        start = time.perf_counter()
        out = model_fn(x, t, c, o)
        wall = time.perf_counter() - start
        total = run.ledger.blocks_total - before_total
        record.append((wall, (run.ledger.blocks_run - before_run) / total if total else 1.0))
        return out
    return call
