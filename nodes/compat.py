"""Small differences between the ComfyUI versions we support (0.8.0 .. 0.33.0), in one place."""
from __future__ import annotations

import inspect

from comfy_api.latest import io

# `advanced=True` (inputs folded away under "advanced" in the UI) arrived after 0.8.0; older versions show them all.
ADVANCED: dict = {"advanced": True} if "advanced" in inspect.signature(io.Float.Input.__init__).parameters else {}
