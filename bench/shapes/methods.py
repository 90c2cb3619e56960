"""The methods the shapes bench measures, as each node builds them by default for the shape's family."""
from __future__ import annotations

from typing import Callable

from ...accel.caching import BlockCachePatch, preset
from ...accel.forecasting.methods import ForecastSettings
from ...accel.forecasting.presets import forecast_preset
from ...accel.patch import DiTPatch


def _forecast(method: str, granularity: str = "model") -> Callable[[str], DiTPatch]:
    def build(family: str) -> DiTPatch:
        p = forecast_preset(family)
        return ForecastSettings(method, interval=p.interval("balanced"), warmup_steps=p.warmup_steps,
                                granularity=granularity).patch()
    return build


# name -> family -> the patch the node builds at its defaults (DiT Block Cache: speed level; DiT Forecast: method,
# balanced speed, granularity)
METHODS: dict[str, Callable[[str], DiTPatch]] = {
    "blockcache": lambda family: BlockCachePatch(preset(family, "balanced")),
    "blockcache-quality": lambda family: BlockCachePatch(preset(family, "quality")),
    "blockcache-fast": lambda family: BlockCachePatch(preset(family, "fast")),
    "forecast": _forecast("spectrum-plan"),          # DiT Forecast's default
    "taylorseer": _forecast("taylorseer"),
    "spectrum": _forecast("spectrum"),
    "cg-taylor": _forecast("cg-taylor"),
    "cg-taylor-stack": _forecast("cg-taylor", "stack"),
    "taylorseer-stack": _forecast("taylorseer", "stack"),
    "taylorseer-block": _forecast("taylorseer", "block"),
}
NODE_DEFAULTS = ("blockcache", "forecast")  # what each node runs when nothing is changed


def build(method: str, family: str) -> DiTPatch:
    if method not in METHODS:
        raise SystemExit(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    return METHODS[method](family)
