"""The collectives of sequence parallelism, on torch.distributed's default process group.

One process group per process (rank 0 = the ComfyUI or test process, ranks 1..P-1 = workers). Every collective runs
with the group's timeout, so a dead peer fails a call instead of hanging it. Uneven token and head counts travel as
uneven splits of one flat `all_to_all_single`.
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


_GROUP: ParallelGroup | None = None
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
    global _GROUP, _RUNS
    if _GROUP is not None and dist.is_initialized():
        dist.destroy_process_group()
    _GROUP, _RUNS = None, 0


def group() -> ParallelGroup | None:
    return _GROUP


def enter_run() -> None:
    global _RUNS
    _RUNS += 1


def leave_run() -> None:
    global _RUNS
    _RUNS = max(0, _RUNS - 1)


def in_run() -> bool:
    return _GROUP is not None and _RUNS > 0 and _GROUP.world > 1


_WIRE = {"seconds": 0.0, "bytes": 0}  # time spent in (and bytes sent by) this process's exchanges, for benchmarks


def wire_stats(reset: bool = False) -> dict:
    """Seconds this rank spent inside all-to-alls (sending, receiving and waiting for slower ranks) and bytes sent."""
    out = dict(_WIRE)
    if reset:
        _WIRE.update(seconds=0.0, bytes=0)
    return out


def exchange(chunks: list[torch.Tensor], recv_shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """All-to-all with uneven sizes: `chunks[r]` goes to rank r; returns what each rank sent here, shaped
    `recv_shapes[r]`."""
    send = torch.cat([c.reshape(-1) for c in chunks])
    out_sizes = [math.prod(s) for s in recv_shapes]
    recv = send.new_empty(sum(out_sizes))
    start = time.perf_counter()
    dist.all_to_all_single(recv, send, out_sizes, [c.numel() for c in chunks])
    _WIRE["seconds"] += time.perf_counter() - start  # CPU/gloo: synchronous; on CUDA this times the launch only
    _WIRE["bytes"] += (send.numel() - chunks[_GROUP.rank].numel()) * send.element_size() if _GROUP else 0
    return [part.view(shape) for part, shape in zip(recv.split(out_sizes), recv_shapes)]


def gather_along(t: torch.Tensor, dim: int, sizes: list[int]) -> torch.Tensor:
    """Every rank's `t` (its `sizes[r]` entries along `dim`) concatenated in rank order, on every rank."""
    world = len(sizes)
    shapes = [tuple(t.shape[:dim]) + (n,) + tuple(t.shape[dim + 1:]) for n in sizes]
    return torch.cat(exchange([t] * world, shapes), dim=dim)


def even_split(n: int, parts: int) -> list[int]:
    """`n` split into `parts` contiguous sizes differing by at most one (the first ones larger)."""
    return [n // parts + (i < n % parts) for i in range(parts)]


def agree_row_means(*means: torch.Tensor, count: int) -> tuple[torch.Tensor, ...]:
    """Per-row means over this rank's tokens -> the same means over every rank's tokens (one small all-reduce).

    Decisions (a block cache's gate, a forecaster's confidence gate) are made from these, so every rank takes the
    same one and the ranks' collectives stay in step. Outside a sequence-parallel run: returned unchanged."""
    if not in_run():
        return means
    stacked = torch.stack([m.float() * count for m in means] + [torch.full_like(means[0].float(), count)])
    dist.all_reduce(stacked)
    return tuple(stacked[i] / stacked[-1] for i in range(len(means)))
