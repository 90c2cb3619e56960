"""Allocate state that outlives one model call where ComfyUI's model compiler cannot see it.

The Comfy Compiler (ComfyUI 0.40+, `comfy/model_prefetch.py`) records the allocations of one block's forward as a
memory graph and replays that pattern for every block (with CUDA graphs on top). A tensor made inside that scope and
kept past it (a cached residual, a forecaster's history, a saved block input) breaks the replay: a graph break at
best, a native abort at worst. ComfyUI's own sparse-attention node therefore allocates its state under
`comfy.model_prefetch.pause_malloc_graph()`, and so do we, through `persistent_allocation` below.

How the core uses it (the core never imports comfy): the boundary (patcher.py) gives every host this function as its
`allocation_scope`; each run carries it (`RunState.allocation_scope`), and patch code allocates per-run state as

    with run.persistent():           # tensors made here are ordinary allocations, outside any capture
        state.history = value.clone()
    kept = run.keep(value)           # the same for one tensor: a persistent copy

Stream and run-data factories (`run.stream_state`, `run.data`) already run inside it. Plain torch (bench, demo,
tests) gets a no-op scope. Temporaries that die inside the block need nothing: the compiler handles those.

For the GPU check: `compiler_present()` says whether this ComfyUI has the compiler, and `graph_breaks(log_text)`
reads the count ComfyUI logs after a run ("Comfy model compiler graph breaks: N, rogues: M").
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import re
import threading
from typing import Callable, ContextManager, Iterator

_local = threading.local()
_GRAPH_BREAKS = re.compile(r"Comfy model compiler graph breaks: (\d+)")


@functools.lru_cache(maxsize=None)
def _pause_malloc_graph() -> Callable[[], ContextManager] | None:
    """ComfyUI's pause, or None before the compiler existed (0.33 and older)."""
    try:
        return importlib.import_module("comfy.model_prefetch").pause_malloc_graph
    except (ImportError, AttributeError):
        return None


def compiler_present() -> bool:
    return _pause_malloc_graph() is not None


@contextlib.contextmanager
def persistent_allocation() -> Iterator[None]:
    """Allocations inside are kept out of the model compiler's capture (plain allocations where it is absent).

    Re-entrant: ComfyUI's pause is a flag, not a counter, so an inner scope's exit would resume capture inside an
    outer one; only the outermost scope pauses and resumes."""
    depth = getattr(_local, "depth", 0)
    _local.depth = depth + 1
    try:
        pause = _pause_malloc_graph()
        if depth or pause is None:
            yield
        else:
            with pause():
                yield
    finally:
        _local.depth = depth


def graph_breaks(log_text: str) -> int | None:
    """The last graph-break count ComfyUI logged in `log_text`, or None when the compiler did not run."""
    counts = _GRAPH_BREAKS.findall(log_text)
    return int(counts[-1]) if counts else None
