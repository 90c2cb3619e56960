"""The collectives of multi-GPU sampling, on torch.distributed.

One process group per process (rank 0 = the ComfyUI or test process, ranks 1..P-1 = workers). A run may lay its
ranks out as a mesh of two axes (`use_mesh`): `cfg` groups, each taking a share of the call's conditioning chunks
(cond, uncond), times `sequence` ranks per group splitting that share's image tokens. `group()` is this rank's
sequence group (the whole world when the run has no cfg axis), `cfg_group()` the ranks holding the same token shard of
the other chunks. Every collective runs with the group's timeout, so a dead peer fails a call instead of hanging it.
Uneven token and head counts travel as uneven splits of one flat `all_to_all_single`.
"""
from __future__ import annotations

import datetime
import math
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ParallelGroup:
    rank: int
    world: int
    backend: str
    timeout_s: float
    process_group: object = None  # a torch.distributed subgroup; None = the default group (the whole world)


@dataclass(frozen=True)
class Mesh:
    """This rank's two groups when a run has a cfg axis: rank r sits in cfg group r // S at sequence rank r % S."""

    cfg: ParallelGroup       # same sequence rank, one per cfg group: where the chunks' outputs are gathered
    sequence: ParallelGroup  # same cfg group: the ranks splitting its image tokens


_GROUP: ParallelGroup | None = None   # the whole world
_MESHES: dict[int, Mesh] = {}          # by cfg group count, made once per process group (creating one is collective)
_MESH: Mesh | None = None              # this run's mesh; None: every rank splits one call's tokens
_RUNS = 0  # sequence-parallel runs in progress in this process: collectives outside them would hang idle peers


class ParallelError(RuntimeError):
    """A multi-GPU run failed on another rank (dead worker, timeout, error there)."""


# Joining waits for the workers to import torch (and ComfyUI): seconds on a busy machine, unrelated to how long a
# collective may wait for a peer once running.
STARTUP_TIMEOUT_S = 180.0


def init_group(rank: int, world: int, port: int, backend: str, timeout_s: float) -> ParallelGroup:
    global _GROUP
    if _GROUP is not None:
        raise ParallelError("a dit-accel process group already exists in this process; shut its pool down first")
    store = dist.TCPStore("127.0.0.1", port, world, is_master=rank == 0,
                          timeout=datetime.timedelta(seconds=STARTUP_TIMEOUT_S))
    dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    _GROUP = ParallelGroup(rank, world, backend, timeout_s)
    return _GROUP


def destroy_group() -> None:
    global _GROUP, _RUNS, _MESH
    if _GROUP is not None and dist.is_initialized():
        dist.destroy_process_group()
    _GROUP, _RUNS, _MESH = None, 0, None
    _MESHES.clear()


def group() -> ParallelGroup | None:
    """This rank's sequence group: the ranks that split one call's image tokens."""
    return _MESH.sequence if _MESH is not None else _GROUP


def cfg_group() -> ParallelGroup | None:
    """The ranks that share a call's conditioning chunks (None: the run has no cfg axis)."""
    return _MESH.cfg if _MESH is not None else None


def use_mesh(cfg_groups: int) -> None:
    """Lay this run's ranks out as `cfg_groups` x (world / cfg_groups). Every rank calls it at the same point of
    the run (creating a subgroup is a collective of the whole world); 1 = no cfg axis."""
    global _MESH
    if _GROUP is None or cfg_groups <= 1:
        _MESH = None
        return
    world = _GROUP.world
    if world % cfg_groups:
        raise ParallelError(f"{world} ranks cannot form {cfg_groups} equal cfg groups")
    if cfg_groups not in _MESHES:
        _MESHES[cfg_groups] = _make_mesh(cfg_groups, world // cfg_groups)
    _MESH = _MESHES[cfg_groups]


def _make_mesh(cfg_groups: int, per_group: int) -> Mesh:
    g, timeout = _GROUP, datetime.timedelta(seconds=_GROUP.timeout_s)
    mine: dict[str, ParallelGroup] = {}
    layouts = {"sequence": [list(range(c * per_group, (c + 1) * per_group)) for c in range(cfg_groups)],
               "cfg": [list(range(s, g.world, per_group)) for s in range(per_group)]}
    for axis in ("sequence", "cfg"):
        for ranks in layouts[axis]:
            # A one-rank group never communicates: no subgroup (and no collective to create one).
            handle = dist.new_group(ranks, timeout=timeout) if len(ranks) > 1 else None
            if g.rank in ranks:
                mine[axis] = ParallelGroup(ranks.index(g.rank), len(ranks), g.backend, g.timeout_s, handle)
    return Mesh(cfg=mine["cfg"], sequence=mine["sequence"])


def enter_run() -> None:
    global _RUNS
    _RUNS += 1


def leave_run() -> None:
    global _RUNS
    _RUNS = max(0, _RUNS - 1)


def in_run() -> bool:
    return _GROUP is not None and _RUNS > 0 and _GROUP.world > 1


def _sequence_collectives() -> ParallelGroup | None:
    """The sequence group when this rank is inside a run that splits tokens over more than one rank."""
    g = group()
    return g if in_run() and g.world > 1 else None


def _cfg_collectives() -> ParallelGroup | None:
    g = cfg_group()
    return g if in_run() and g is not None and g.world > 1 else None


_WIRE = {"seconds": 0.0, "bytes": 0}  # time spent in (and bytes sent by) this process's exchanges, for benchmarks


def wire_stats(reset: bool = False) -> dict:
    """Seconds this rank spent inside all-to-alls (sending, receiving and waiting for slower ranks) and bytes sent."""
    out = dict(_WIRE)
    if reset:
        _WIRE.update(seconds=0.0, bytes=0)
    return out


def exchange(chunks: list[torch.Tensor], recv_shapes: list[tuple[int, ...]],
             over: ParallelGroup | None = None) -> list[torch.Tensor]:
    """All-to-all with uneven sizes within `over` (default: the sequence group): `chunks[r]` goes to its rank r;
    returns what each rank sent here, shaped `recv_shapes[r]`."""
    g = over or group()
    send = torch.cat([c.reshape(-1) for c in chunks])
    out_sizes = [math.prod(s) for s in recv_shapes]
    recv = send.new_empty(sum(out_sizes))
    start = time.perf_counter()
    dist.all_to_all_single(recv, send, out_sizes, [c.numel() for c in chunks], group=g.process_group)
    _WIRE["seconds"] += time.perf_counter() - start  # CPU/gloo: synchronous; on CUDA this times the launch only
    _WIRE["bytes"] += (send.numel() - chunks[g.rank].numel()) * send.element_size()
    return [part.view(shape) for part, shape in zip(recv.split(out_sizes), recv_shapes)]


def gather_along(t: torch.Tensor, dim: int, sizes: list[int], over: ParallelGroup | None = None) -> torch.Tensor:
    """Every rank's `t` (its `sizes[r]` entries along `dim`) concatenated in rank order, on every rank of `over`
    (default: the sequence group)."""
    world = len(sizes)
    shapes = [tuple(t.shape[:dim]) + (n,) + tuple(t.shape[dim + 1:]) for n in sizes]
    return torch.cat(exchange([t] * world, shapes, over), dim=dim)


def even_split(n: int, parts: int) -> list[int]:
    """`n` split into `parts` contiguous sizes differing by at most one (the first ones larger)."""
    return [n // parts + (i < n % parts) for i in range(parts)]


def agree_row_means(*means: torch.Tensor, count: int) -> tuple[torch.Tensor, ...]:
    """Per-row means over this rank's tokens -> the same means over every rank's tokens (one small all-reduce).

    Decisions (a block cache's gate, a forecaster's confidence gate) are made from these, so every rank takes the
    same one and the ranks' collectives stay in step. Outside a sequence-parallel run: returned unchanged."""
    g = _sequence_collectives()
    if g is None:
        return means
    stacked = torch.stack([m.float() * count for m in means] + [torch.full_like(means[0].float(), count)])
    dist.all_reduce(stacked, group=g.process_group)
    return tuple(stacked[i] / stacked[-1] for i in range(len(means)))


def agree_all(mask):
    """A per-sample boolean mask (a tensor, or a list of bools kept on the host) -> true only where it is true in
    every cfg group (one tiny all-reduce), of the same kind.

    A block cache reuses a sample only if all of its streams may; under CFG parallelism cond and uncond sit in
    different cfg groups, so each group's own answer is combined here. Without a cfg axis: returned unchanged."""
    g = _cfg_collectives()
    if g is None:
        return mask
    if isinstance(mask, list):
        device = torch.device("cuda", torch.cuda.current_device()) if g.backend == "nccl" else torch.device("cpu")
        agreed = torch.tensor(mask, dtype=torch.int32, device=device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MIN, group=g.process_group)
        return [bool(v) for v in agreed.tolist()]
    agreed = mask.to(torch.int32)
    dist.all_reduce(agreed, op=dist.ReduceOp.MIN, group=g.process_group)
    return agreed.bool()


def agree_verdict(value: float, authoritative: bool) -> float:
    """One number every cfg group uses: the largest among the groups whose value is `authoritative` (the groups
    holding the stream a one-process run would have measured), else the largest of all. Without a cfg axis: `value`."""
    g = _cfg_collectives()
    if g is None:
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if g.backend == "nccl" else torch.device("cpu")
    both = torch.tensor([value if authoritative else -math.inf, value], dtype=torch.float64, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=g.process_group)
    return float(both[0]) if both[0] > -math.inf else float(both[1])
