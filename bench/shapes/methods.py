"""The methods the shapes bench measures, as each node builds them by default for the shape's family.

`STATE_ONLY` methods have no wall-time run here (head guidance needs its guidance function's extra pass, which the
speed runs' plain CFG sampler does not make): the state table measures them, the speed runs skip them."""
from __future__ import annotations

from typing import Callable

from ...accel.caching import BlockCachePatch, preset
from ...accel.forecasting.methods import ForecastSettings
from ...accel.forecasting.presets import forecast_preset
from ...accel.guidance.softpag import SoftPAGConfig, SoftPAGPatch
from ...accel.patch import DiTPatch
from .table import Shape


def _forecast(method: str, granularity: str = "model") -> Callable[[Shape], DiTPatch]:
    def build(shape: Shape) -> DiTPatch:
        p = forecast_preset(shape.family)
        return ForecastSettings(method, interval=p.interval("balanced"), warmup_steps=p.warmup_steps,
                                granularity=granularity).patch()
    return build


def _head_guidance(shape: Shape) -> DiTPatch:
    """DiT Head Guidance's `auto` heads where no preset ships for the model: every head of the middle block."""
    return SoftPAGPatch(SoftPAGConfig(heads=((shape.depth // 2, None),)))


# name -> shape -> the patch the node builds at its defaults (DiT Block Cache: speed level; DiT Forecast: method,
# balanced speed, granularity; DiT Head Guidance: auto heads)
METHODS: dict[str, Callable[[Shape], DiTPatch]] = {
    "blockcache": lambda shape: BlockCachePatch(preset(shape.family, "balanced")),
    "blockcache-quality": lambda shape: BlockCachePatch(preset(shape.family, "quality")),
    "blockcache-fast": lambda shape: BlockCachePatch(preset(shape.family, "fast")),
    "forecast": _forecast("spectrum-plan"),          # DiT Forecast's default
    "taylorseer": _forecast("taylorseer"),
    "spectrum": _forecast("spectrum"),
    "cg-taylor": _forecast("cg-taylor"),
    "cg-taylor-stack": _forecast("cg-taylor", "stack"),
    "taylorseer-stack": _forecast("taylorseer", "stack"),
    "taylorseer-block": _forecast("taylorseer", "block"),
    "head-guidance": _head_guidance,
}
STATE_ONLY = ("head-guidance",)
NODE_DEFAULTS = ("blockcache", "forecast", "head-guidance")  # what each node runs when nothing is changed


def build(method: str, shape: Shape) -> DiTPatch:
    if method not in METHODS:
        raise SystemExit(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    return METHODS[method](shape)


def timed_methods(methods: list[str]) -> list[str]:
    """The methods a wall-time run can measure (`STATE_ONLY` left out)."""
    return [m for m in methods if m not in STATE_ONLY]
