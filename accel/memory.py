"""State a method keeps across steps: counted from its own tensors, planned at a reduced shape, held to a budget.

Three pieces, shared by every stateful method (block cache, forecasting, ...):
  * `state_nbytes(obj)` walks a state object (dataclasses, dicts, lists, predictors) and adds up the bytes of every
    distinct tensor storage it holds on the model's device. Nothing is estimated: it reads the tensors the method
    allocated. A predictor that keeps its history elsewhere (offloaded to the CPU) says so through `device_nbytes`.
  * `simulate(...)` drives a patch's own hooks through the steps of a model with the given block layout at a few
    tokens (real width, depth, rows and dtype) and extrapolates its bytes to the full token count: the bytes it
    would hold at any shape are known before anything is allocated.
  * `MemoryBudget`: the limit a method plans against at the start of a run, and `fit(...)`: walk a method's stated
    ladder of cheaper settings until the simulated state fits, and say what was done. Planning runs once per run, at
    its first model call, before the method allocates anything.

The default budget (`AUTO`) is 10 % of the device memory free at the run's first model call, at most 1 GiB (1 GiB
where the host does not report free memory): on a 24 GB card holding Wan 14B in fp8 about 8 GB is free while
sampling, which leaves the forward's own activations room. `memory_gib` 0 means no limit: today's behaviour.
"""
from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch

from .context import StepContext, Stream
from .parallel import comm
from .patch import BlockCall, DiTPatch, ModelCall
from .state import RunState

GiB = 2 ** 30
AUTO = -1.0              # memory_gib: derive the budget from free memory
UNLIMITED = 0.0          # memory_gib: no budget (exactly the configured method)
AUTO_CAP = 1 * GiB       # the auto budget never exceeds this
AUTO_SHARE = 0.10        # of the memory free at the first model call


def state_nbytes(obj, seen: set | None = None, host: bool = False) -> int:
    """Bytes of every distinct tensor storage `obj` holds on its compute device (tensors inside dataclasses, dicts,
    lists, tuples and plain objects are followed; shared storages count once). `host`: the bytes it keeps offloaded
    in CPU memory instead."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    if isinstance(obj, torch.Tensor):
        if host or obj.device.type == "meta":  # a meta tensor is a shape, not memory
            return 0
        storage = obj.untyped_storage()
        key = ("storage", obj.device, storage._cdata)
        if key in seen:
            return 0
        seen.add(key)
        return storage.nbytes()
    if obj is None or isinstance(obj, (int, float, str, bool, torch.dtype, torch.device)):
        return 0
    seen.add(id(obj))
    own = getattr(type(obj), "device_nbytes", None)
    if own is not None:  # a predictor that keeps part of its history off the device reports for itself
        return obj.nbytes - obj.device_nbytes if host else obj.device_nbytes
    if isinstance(obj, dict):
        return sum(state_nbytes(v, seen, host) for v in obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sum(state_nbytes(v, seen, host) for v in obj)
    fields = vars(obj) if hasattr(obj, "__dict__") else {}
    return sum(state_nbytes(v, seen, host) for v in fields.values())


def run_state_nbytes(run: RunState, owner: str, host: bool = False) -> int:
    """What one patch (by its state name) holds in a run on the model's device (`host`: offloaded to CPU memory):
    its per-stream states and its run-wide data."""
    seen: set = set()
    total = sum(state_nbytes(s, seen, host) for s in run.states_of(owner))
    return total + sum(state_nbytes(v, seen, host) for k, v in run.patch_data.items()
                       if k == owner or k.startswith(owner + "."))


@dataclass(frozen=True)
class MemoryBudget:
    """The state limit a run plans against, and where it came from (for the log line). History offloaded to CPU
    memory is held to `host_limit`: a quarter of the memory the system reports available (None: unknown, no limit)."""

    limit: int | None        # bytes; None: no limit
    source: str
    host_limit: int | None = None

    @classmethod
    def resolve(cls, memory_gib: float, free_bytes: int | None) -> "MemoryBudget":
        """`memory_gib`: AUTO (-1), UNLIMITED (0) or a limit in GiB; `free_bytes`: what the host reported free at the
        run's first model call (None: not reported, e.g. on CPU)."""
        if memory_gib == UNLIMITED:
            return cls(None, "no limit")
        host = host_available()
        host = None if host is None else host // 4
        if memory_gib > 0:
            return cls(int(memory_gib * GiB), f"set to {memory_gib:g} GiB", host)
        if free_bytes is None:
            return cls(AUTO_CAP, "auto: 1 GiB (free memory not reported)", host)
        limit = min(AUTO_CAP, int(free_bytes * AUTO_SHARE))
        return cls(limit, f"auto: 10 % of {free_bytes / GiB:.1f} GiB free, at most 1 GiB", host)

    def allows(self, nbytes: int, host_nbytes: int = 0) -> bool:
        return (self.limit is None or nbytes <= self.limit) and \
            (self.limit is None or self.host_limit is None or host_nbytes <= self.host_limit)


def host_available() -> int | None:
    """System memory available now (bytes), where the OS says (Linux, macOS); None elsewhere."""
    import os
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def validate_memory_gib(memory_gib: float) -> None:
    if memory_gib < 0 and memory_gib != AUTO:
        raise ValueError(f"memory_gib must be -1 (auto), 0 (no limit) or a size in GiB, got {memory_gib}")


# ---- planning at a reduced shape ------------------------------------------------------------------------------

INPUT_AXIS = "input"  # the model input's spatial size, beside the streams' token counts

@dataclass(frozen=True)
class StateShape:
    """What a patch's state depends on: the first block's stream shapes (key -> (rows, tokens, width), all rows of
    the call), their dtype, the block layout (kind and stream keys per position), the model input's shape and the
    conditioning streams."""

    streams: tuple[tuple[str, tuple[int, ...]], ...]
    dtype: torch.dtype
    layout: tuple[tuple[str, tuple[str, ...]], ...]
    x: tuple[int, ...]
    conds: tuple[tuple[int, int], ...]   # each conditioning stream's rows (start, stop)

    @classmethod
    def of(cls, call: BlockCall | None, x: torch.Tensor, ctx: StepContext) -> "StateShape":
        """The shape of this run, from its first model call."""
        keys = [k for k in call.stream_keys if call.args.get(k) is not None] if call is not None else []
        streams = tuple((k, tuple(call.args[k].shape)) for k in keys)
        dtype = call.args[keys[0]].dtype if keys else x.dtype
        return cls(streams, dtype, call.layout if call is not None else (), tuple(x.shape),
                   tuple((s.rows.start, s.rows.stop) for s in ctx.streams))

    @property
    def streams_of_call(self) -> tuple[Stream, ...]:
        return tuple(Stream("cond" if i == 0 else "uncond", f"stream{i}", slice(a, b))
                     for i, (a, b) in enumerate(self.conds))

    @property
    def token_axes(self) -> tuple[str, ...]:
        """What the state's size can grow with: each stream's token count, and the model input's spatial size."""
        return tuple(key for key, _ in self.streams) + (INPUT_AXIS,)

    def full_count(self, axis: str) -> int:
        """The axis's size at the full shape."""
        return math.prod(self.x[2:]) if axis == INPUT_AXIS else dict(self.streams)[axis][1]

    def reduced(self, counts: dict[str, int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """CPU tensors of this shape with each axis (`token_axes`) cut to `counts[axis]` (1 where not given): rows,
        widths, channels and dtype as at the full shape."""
        streams = {key: torch.zeros(shape[0], counts.get(key, 1), *shape[2:], dtype=self.dtype)
                   for key, shape in self.streams}
        x = torch.zeros(*self.x[:2], counts.get(INPUT_AXIS, 1), dtype=self.dtype)
        return streams, x

    def block_args(self, streams: dict[str, torch.Tensor], kind_index: int, keys: tuple[str, ...]) -> dict:
        """A block's stream tensors. Later block kinds (Flux's and HunyuanVideo's single blocks) take the joint
        sequence of the first kind's streams, concatenated along the tokens."""
        if kind_index == 0:
            return {k: streams[k] for k in keys}
        return {keys[0]: torch.cat(list(streams.values()), dim=1)}


def _simulate_reduced(patch: DiTPatch, shape: StateShape, counts: dict[str, int], total_steps: int,
                      steps: int | None) -> tuple[int, int]:
    run = RunState()
    patch.on_run_start(run)
    streams, x = shape.reduced(counts)
    schedule = tuple(1.0 - i / total_steps for i in range(total_steps)) + (0.0,)
    kinds = tuple(dict.fromkeys(k for k, _ in shape.layout))
    peak = [0, 0]

    def measure() -> None:
        peak[0] = max(peak[0], run_state_nbytes(run, patch.name))
        peak[1] = max(peak[1], run_state_nbytes(run, patch.name, host=True))

    for step in range(total_steps if steps is None else min(steps, total_steps)):
        ctx = StepContext(step, total_steps, schedule[step], shape.streams_of_call, x.shape[0], schedule[step + 1],
                          schedule=schedule)

        def run_model() -> torch.Tensor:
            out: dict = {}
            for position, (kind, keys) in enumerate(shape.layout):
                args = shape.block_args(streams, kinds.index(kind), keys)
                call = BlockCall(position, len(shape.layout), kind, position, args, keys, kinds, layout=shape.layout)
                if position == 0:
                    patch.before_blocks(run, ctx, call)
                # A block returns fresh tensors, as a real one does (state that keeps them must count each).
                out = patch.around_block(run, ctx, call, lambda a, keys=keys: {k: torch.zeros_like(a[k])
                                                                               for k in keys})
                if position == len(shape.layout) - 1:
                    measure()
                    out = patch.after_blocks(run, ctx, call, out)
            return torch.zeros_like(x)

        patch.around_model(run, ctx, ModelCall(x, len(shape.layout)), run_model)
        measure()
    return peak[0], peak[1]


def simulate(patch: DiTPatch, shape: StateShape, total_steps: int = 20, steps: int | None = None) -> tuple[int, int]:
    """Largest state `patch` holds over the first `steps` steps (all by default) of a `total_steps` schedule at
    `shape`, as (device bytes, bytes offloaded to CPU memory), from its own hooks and allocations.

    The patch runs on CPU tensors with one token per stream and a one-element input (full width, depth, rows and
    dtype), then once more per axis with that axis at two: what it keeps is per-token tensors (of one stream, or of
    the streams joined) plus per-row scalars, so its bytes are affine in each axis, and those runs give them at the
    full shape exactly (`tests/accel/test_memory.py` checks it against a run at the full token count). The runs stay a
    few tokens whatever the shape: planning never allocates what it is planning (a token count with no small common
    divisor, such as Qwen-Image's 83 x 83, once made it simulate at full size). The state is measured after the last
    block of each call (the stack's end holds the most) and after each call."""
    with _local_only():
        base = _simulate_reduced(patch, shape, {}, total_steps, steps)
        total = list(base)
        for axis in shape.token_axes:
            bumped = _simulate_reduced(patch, shape, {axis: 2}, total_steps, steps)
            total = [t + (b - a) * (shape.full_count(axis) - 1) for t, a, b in zip(total, base, bumped)]
    return tuple(total)


@contextmanager
def _local_only() -> Iterator[None]:
    """No sequence-parallel collectives inside: a simulation is this process's own dry run. Its gates would otherwise
    agree their change metric with the other ranks (`comm.agree_row_means`), which do not simulate in step with it:
    each process caches its plans (`planned_state`), so a worker started after rank 0 planned a shape simulates
    alone, and both ranks wait in different collectives until the timeout."""
    left = 0
    while comm.in_run():
        comm.leave_run()
        left += 1
    try:
        yield
    finally:
        for _ in range(left):
            comm.enter_run()


@functools.lru_cache(maxsize=64)  # a pure function of its arguments: runs of one shape plan once per process
def planned_state(kind: type, config, shape: StateShape, total_steps: int, steps: int) -> tuple[int, int]:
    """(device, host) bytes a `kind(config)` patch would hold at `shape` (`simulate`); `config` must not itself
    plan (memory_gib UNLIMITED)."""
    return simulate(kind(config), shape, total_steps, steps)


@dataclass(frozen=True)
class Fit:
    """The outcome of `fit`: the setting to run, its planned bytes, and what was given up to get there."""

    config: object
    device_bytes: int
    host_bytes: int
    steps: tuple[str, ...]
    fits: bool
    wanted_bytes: int
    budget: MemoryBudget

    def describe(self) -> str:
        """One clause for the method's log line."""
        mib = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
        host = f" (+{mib(self.host_bytes)} in CPU memory)" if self.host_bytes else ""
        if not self.steps:
            return f"planned {mib(self.device_bytes)}{host}, within its memory budget ({self.budget.source})"
        done = "; ".join(self.steps)
        outcome = "fits" if self.fits else "still over: turned off"
        return (f"the configured setting would hold {mib(self.wanted_bytes)}, over its memory budget of "
                f"{mib(self.budget.limit)} ({self.budget.source}): {done} -> {mib(self.device_bytes)}{host}, "
                f"{outcome}")


def fit(config, ladder: Iterable[tuple[str, Callable]], nbytes: Callable[[object], tuple[int, int]],
        budget: MemoryBudget) -> Fit:
    """The configured setting if its planned state fits `budget`, else the setting after the fewest rungs of
    `ladder` that fits (rungs apply cumulatively, in order; a rung returning None does not apply). With no budget the
    setting is not even simulated: exactly what was configured runs."""
    if budget.limit is None:
        return Fit(config, 0, 0, (), True, 0, budget)
    device, host = wanted = nbytes(config)
    steps: list[str] = []
    if not budget.allows(device, host):
        for what, rung in ladder:
            cheaper = rung(config)
            if cheaper is None or cheaper == config:
                continue
            config, steps = cheaper, steps + [what]
            device, host = nbytes(config)
            if budget.allows(device, host):
                break
    return Fit(config, device, host, tuple(steps), budget.allows(device, host), wanted[0], budget)


def cheaper_dtype(dtype: torch.dtype) -> torch.dtype | None:
    """The storage dtype one step cheaper than `dtype` for a history (None: already 16-bit or less)."""
    return torch.bfloat16 if dtype.is_floating_point and torch.finfo(dtype).bits > 16 else None
