"""Keep glibc's heap resident for a wall-time comparison on CPU.

glibc's malloc returns freed memory to the system on its own schedule: it trims the heap's top once the free space
there passes a threshold, and moves its mmap threshold with the sizes it has seen freed. A process that later needs
that memory again faults every page back in (zero-filled by the kernel). On the reference model this lottery costs
whole-model runs up to a fifth of their time (20,000-300,000 page faults per image, measured with `getrusage`), and
which arm pays depends on the heap's history in that process: runs of the same script have shown the faults in the
block-cache arm only, in both arms, and in neither. A GPU has no such cost (the CUDA caching allocator keeps what
it reserved), so a benchmark that compares arms on CPU pins glibc's thresholds first: every arm then runs on a heap that
stays mapped. `--allocator glibc` in the scripts that use this measures glibc's defaults instead.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt's parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20     # glibc's largest allowed: blocks of a model's activations stay on the heap
TRIM_THRESHOLD = 2 ** 31 - 1  # never trim the heap's top (mallopt takes a C int)
TOP_PAD = 64 << 20            # grow the heap in large steps


def pin_glibc_heap() -> str:
    """Pin glibc's trim and mmap thresholds for this process; returns a line saying what was done."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return "allocator: not glibc, left as it is"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            mallopt(M_TOP_PAD, TOP_PAD)]
    if not all(done):
        return "allocator: glibc refused the pinned thresholds, left as it is"
    return ("allocator: glibc heap kept resident (mmap threshold 32 MiB, no trimming), so no arm pays page faults for "
            "memory another freed; --allocator glibc measures glibc's own trimming")


def heap_setting(mode: str) -> str:
    """Apply `mode` ("steady": pin the heap; "glibc": leave glibc as the environment sets it) and say what it is."""
    if mode == "steady":
        return pin_glibc_heap()
    tuned = sorted(k for k in os.environ if k.startswith("MALLOC_"))
    return f"allocator: glibc as the environment sets it ({', '.join(tuned)})" if tuned else \
        "allocator: glibc's defaults (heap trimming on)"
