"""Per-family settings of the DiT Forecast node's speed levels, each with where it comes from.

A level fixes the longest stretch between computes (`interval`) and the first steps always computed (`warmup_steps`).
"balanced" follows the interval and warm-up the official TaylorSeer code ships for the family (Shenyi-Z/TaylorSeer,
`fresh_threshold` / `first_enhance` in each model's `cache_init.py`; Qwen-Image from Shenyi-Z/Cache4Diffusion), all at
50 steps; "quality" and "fast" move that interval by 2 either way, the spacing measured on the reference model (3 /
5 / 7: 2.5x / 4x / 5x on 20 steps). Families without a published setting borrow the reference model's (Wan 2.1
format) levels and say so once (the shared preset table, accel/presets.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..presets import LEVELS, check_level, lookup, register

CAPABILITY = "forecast"
LEVEL_OFFSET = {"quality": -2, "balanced": 0, "fast": 2}

TAYLORSEER_CODE = ("official TaylorSeer code, {path} (fresh_threshold = {interval}, first_enhance = {warmup}, "
                   "50 steps)")
REFERENCE = ("our measurement: reference model (Wan 2.1 format), 20 steps: interval 3 / 5 / 7 = 2.5x / 4x / 5x "
             "(README, forecasting)")


@dataclass(frozen=True)
class ForecastPreset:
    family: str
    balanced_interval: int
    warmup_steps: int
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        missing = [f for f in ("balanced_interval", "warmup_steps") if f not in self.sources]
        if missing:
            raise ValueError(f"{self.family}: no source for {missing}")
        if self.balanced_interval - 2 < 1:
            raise ValueError(f"{self.family}: balanced_interval must leave quality at least 1")

    def interval(self, level: str) -> int:
        return self.balanced_interval + LEVEL_OFFSET[check_level(level)]


def _taylorseer(family: str, interval: int, warmup: int, path: str) -> ForecastPreset:
    source = TAYLORSEER_CODE.format(path=path, interval=interval, warmup=warmup)
    return ForecastPreset(family, interval, warmup, {"balanced_interval": source, "warmup_steps": source})


PRESETS: dict[str, ForecastPreset] = {p.family: p for p in (
    _taylorseer("wan", 5, 1, "TaylorSeer-Wan2.1/wan/taylorseer/cache_functions/cache_init.py"),
    _taylorseer("flux", 6, 3, "TaylorSeer-FLUX/src/flux/modules/cache_functions/cache_init.py"),
    _taylorseer("hunyuan_video", 5, 1, "TaylorSeer-HunyuanVideo/hyvideo/modules/cache_functions/cache_init.py"),
    _taylorseer("qwen_image", 6, 3, "Cache4Diffusion qwen_image/taylorseer_qwen_image/cache_functions/cache_init.py"),
)}
# One preset spans the levels: the shared table holds it at each; Wan's (also the reference model's measured
# levels) is the one families without a published setting borrow.
for _preset in PRESETS.values():
    register(CAPABILITY, _preset.family, dict.fromkeys(LEVELS, _preset),
             f"balanced: {_preset.sources['balanced_interval']}; quality / fast: {REFERENCE}")


def forecast_preset(family: str) -> ForecastPreset:
    """The family's preset; others borrow the reference model's, with one warning each."""
    return lookup(CAPABILITY, family, "balanced")[0]
