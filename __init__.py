"""dit-accel: a ComfyUI custom node pack that makes diffusion transformers faster.

ComfyUI imports this file from `custom_nodes/<folder>/`; it registers the nodes only when `comfy` is importable, so
`import dit_accel` works anywhere and the core (`accel/`, `kernels/`) stays testable without ComfyUI.
"""
import importlib.util

__version__ = "0.1.0"

if importlib.util.find_spec("comfy") is not None and importlib.util.find_spec("comfy_api") is not None:
    from .nodes.extension import comfy_entrypoint  # noqa: F401  (ComfyUI's V3 entry point)

    __all__ = ["comfy_entrypoint"]
