"""What the kernels can run on: one probe for every kernel package, so "Triton is available" means one thing.

  triton_importable()  the triton package is installed (nothing is imported: see `interpreter_ready`)
  interpreting()       TRITON_INTERPRET=1 is set (CPU tensors run under Triton's interpreter, for tests)
  interpreter_ready()  ... and triton was not imported before it was set (then only a new process helps)
  triton_available()   installed and something to run on: a CUDA device, or the interpreter

A kernel package adds its own per-input checks (dtypes, shapes, the tensor's device) on top of these.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import torch


def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def interpreter_ready() -> bool:
    if not interpreting():
        return False
    if "triton.language" not in sys.modules:
        return True
    from triton.runtime.interpreter import InterpretedFunction
    return isinstance(sys.modules["triton.language"].zeros, InterpretedFunction)


def triton_available() -> bool:
    return triton_importable() and (torch.cuda.is_available() or interpreting())
