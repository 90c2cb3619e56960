"""Bench methods of one capability (guidance): each calls `register_method` from `bench/methods.py`.

`softpag` is CFG plus head-level SoftPAG with the shipped reference preset, its prefix branched off the cond pass;
`pag-layer` is layer-level PAG (identity attention on every head of one layer) as a full third pass, for comparison.
Both report `cost_ratio` (FLOPs with guidance / CFG alone) from the runner.
"""
from __future__ import annotations

import dataclasses

from ..accel.guidance.presets import load_preset
from ..accel.guidance.reference_objective import softpag_post_cfg
from ..accel.guidance.softpag import SoftPAGConfig, SoftPAGPatch
from .methods import BenchMethod, register_method

REFERENCE_PRESET = "reference-digits"


def softpag_method(name: str, description: str, config: SoftPAGConfig) -> BenchMethod:
    return BenchMethod(name, description, build=lambda steps: [SoftPAGPatch(config)],
                       post_cfg=lambda steps: softpag_post_cfg(config))


def preset_config(preset_name: str = REFERENCE_PRESET, **overrides) -> SoftPAGConfig:
    preset = load_preset(preset_name)
    return SoftPAGConfig(heads=preset.heads, **{**preset.settings, **overrides})


def best_layer_config(preset_name: str = REFERENCE_PRESET) -> SoftPAGConfig:
    """Layer-level PAG on the best single layer HeadHunter measured, same settings, as a full extra pass."""
    preset = load_preset(preset_name)
    layer = int(preset.extra["best_single_layer"]["layer"])
    return dataclasses.replace(preset_config(preset_name), heads=((layer, None),), reuse_prefix=False)


def _register() -> None:
    try:
        softpag, layer = preset_config(), best_layer_config()
    except Exception as err:  # noqa: BLE001 - a broken preset file must not take the whole bench down
        register_method(BenchMethod("softpag", f"unavailable: {err}", build=lambda steps: _raise(err)))
        return
    register_method(softpag_method("softpag", f"CFG + SoftPAG on the {REFERENCE_PRESET!r} heads, branched off the "
                                              "cond pass", softpag))
    register_method(softpag_method("pag-layer", f"CFG + layer-level PAG on layer {layer.first_layer}, a full third "
                                                "pass (comparison)", layer))


def _raise(err: Exception):
    raise err


_register()
