"""The registry of model-family adapters: adding a family is one new file that registers itself here."""
from __future__ import annotations

import importlib
import logging

import torch

from .base import FamilyAdapter

log = logging.getLogger("dit_accel")

# Family modules loaded at start-up. A module that fails to import (its ComfyUI hooks changed) is disabled with one
# warning; the pack still imports and the other families still work.
BUILTIN_FAMILY_MODULES = ("wan", "flux", "qwen_image", "hunyuan_video", "sd3", "ltxv", "lumina", "ltxav")

_ADAPTERS: dict[str, FamilyAdapter] = {}
_DISABLED: dict[str, str] = {}
_loaded = False


class UnsupportedModelError(ValueError):
    pass


def register_adapter(cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
    _ADAPTERS[cls.name] = cls()
    return cls


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_FAMILY_MODULES:
        try:
            importlib.import_module(f"{__package__}.{module}")
        except Exception as err:  # noqa: BLE001 - any failure disables just that family
            _disable(module, f"{type(err).__name__}: {err}")


def _disable(name: str, why: str) -> None:
    """Disable a family once, with one warning, and keep it out of the supported list."""
    if name not in _DISABLED:
        _DISABLED[name] = why
        log.warning("dit-accel: model family %r disabled: %s", name, why)
    _ADAPTERS.pop(name, None)


def supported_families() -> list[str]:
    _load_builtin()
    return sorted(_ADAPTERS)


def adapter_for(diffusion_model: torch.nn.Module) -> FamilyAdapter:
    """The adapter serving this diffusion model, chosen from its class, or a clear error naming what is supported."""
    _load_builtin()
    for adapter in _ADAPTERS.values():
        if adapter.matches(diffusion_model):
            missing = adapter.missing_hooks(type(diffusion_model))
            if missing:
                _disable(adapter.name, f"{type(diffusion_model).__name__} no longer consults {', '.join(missing)} "
                                       "in this ComfyUI")
                break
            return adapter
    disabled = "".join(f"; {name} is disabled ({why})" for name, why in _DISABLED.items())
    raise UnsupportedModelError(
        f"dit-accel does not support the model {type(diffusion_model).__name__!r}. "
        f"Supported families: {', '.join(supported_families()) or 'none'}{disabled}. "
        "Connect the MODEL output of a loader for one of these families.")


def registered_adapters() -> list[FamilyAdapter]:
    """Every enabled family adapter (for callers that need a fact from all of them, e.g. all block-list names)."""
    _load_builtin()
    return list(_ADAPTERS.values())
