"""The "DiT Forecast" node: predict the model's output (or its blocks' residuals) on skipped steps."""
from __future__ import annotations

import dataclasses
import logging

from comfy_api.latest import io

from ..accel.forecasting.methods import METHODS, ForecastSettings
from ..accel.forecasting.presets import LEVELS, forecast_preset
from ..accel.memory import AUTO
from .comfy.patcher import adapter_of, apply_patch
from .compat import ADVANCED
from .memory_input import memory_budget_input

log = logging.getLogger("dit_accel")

CUSTOM = "custom"
_DEFAULT = ForecastSettings()


class DiTForecast(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelForecast",
            display_name="DiT Forecast",
            category="dit-accel",
            description="Runs the model on a few steps only and forecasts its output on the others (TaylorSeer, "
                        "Spectrum, CG-Taylor, or ours: spectral fit with computes planned over the sigma schedule). "
                        "Logs model calls computed, "
                        "the speedup and the memory the forecaster held after each run, and says so when a schedule "
                        "is too short to forecast (few-step distilled models). Use it instead of DiT Block Cache, "
                        "not with it.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to accelerate (any supported DiT family)."),
                # spectrum-plan: at or above Spectrum (itself above TaylorSeer) at every speed measured on 20 and 50
                # steps (2.5x-8.3x; README, forecasting).
                io.Combo.Input("method", options=list(METHODS), default="spectrum-plan",
                               tooltip="spectrum-plan (default, ours): Spectrum's fit with the same number of "
                                       "computes as the even schedule, placed where a forecast-error model over the "
                                       "sampler's sigmas says they matter most. spectrum: Chebyshev fit over the "
                                       "computed steps, blended with the Taylor term, computes spread evenly. "
                                       "taylorseer: Taylor forecast from the last computed steps. cg-taylor: the "
                                       "first block runs every step; when its own forecast error is under "
                                       "`threshold` the rest is skipped and the output forecast (costs a block per "
                                       "step, which shallow models feel most)."),
                io.Combo.Input("speed", options=[*LEVELS, CUSTOM], default="balanced",
                               tooltip="Per-family presets. balanced: the interval and warm-up TaylorSeer's own "
                                       "code uses for the family (Wan / HunyuanVideo: compute at least every 5th "
                                       "step after 1 warm-up step; Flux / Qwen-Image: every 6th after 3); "
                                       "quality: 2 steps closer; fast: 2 steps further. Other families borrow Wan's "
                                       "and say so. custom: use `interval` and `warmup_steps` below."),
                io.Int.Input("interval", default=_DEFAULT.interval, min=1, max=20, **ADVANCED,
                             tooltip="custom only: the longest stretch of steps between two computes; the computes "
                                     "are spread evenly (spectrum-plan: as many computes, placed by its plan). 1 "
                                     "computes every step (exact output)."),
                io.Float.Input("threshold", default=_DEFAULT.threshold, min=0.0, max=10.0, step=0.005, **ADVANCED,
                               tooltip="cg-taylor: how much first-block forecast error is accepted before the rest "
                                       "of the model runs again. 0 computes every step."),
                io.Int.Input("order", default=_DEFAULT.order, min=0, max=3, **ADVANCED,
                             tooltip="Taylor order: 0 reuses the last output, 1 (the default) extrapolates "
                                     "linearly, 2-3 use more history."),
                io.Int.Input("degree", default=_DEFAULT.degree, min=0, max=8, **ADVANCED,
                             tooltip="spectrum / spectrum-plan: degree of the Chebyshev fit over the computed steps."),
                io.Combo.Input("granularity", options=["model", "stack", "block"], default=_DEFAULT.granularity,
                               **ADVANCED,
                               tooltip="What is forecast: the model output (skips everything, least memory), the "
                                       "block stack's residual, or each block's residual (most memory). "
                                       "cg-taylor: model forecasts the output behind its first-block gate, stack "
                                       "forecasts what follows the first block (CG-Taylor's own target); "
                                       "spectrum-plan plans its computes only for the model output (stack / "
                                       "block: spread evenly)."),
                io.Float.Input("start_percent", default=_DEFAULT.start_percent, min=0.0, max=1.0, step=0.01,
                               **ADVANCED, tooltip="No forecasting before this fraction of the schedule."),
                io.Float.Input("end_percent", default=_DEFAULT.end_percent, min=0.0, max=1.0, step=0.01,
                               **ADVANCED, tooltip="No forecasting after this fraction of the schedule."),
                io.Int.Input("warmup_steps", default=_DEFAULT.warmup_steps, min=0, max=100, **ADVANCED,
                             tooltip="custom only: first steps always computed (the speed levels set it per "
                                     "family)."),
                io.Int.Input("final_steps", default=-1, min=-1, max=100, **ADVANCED,
                             tooltip="Last steps always computed. -1: the method's default (1; 0 for "
                                     "spectrum-plan, whose plan decides whether the final step runs when computes "
                                     "are scarce: 5 or fewer; with more it always runs)."),
                memory_budget_input("history in bf16, history in CPU memory, lower Taylor order, forecasting off (the model output's history is small: only stack / block granularity and cg-taylor's probe on video come near it)"),
            ],
            outputs=[io.Model.Output(tooltip="The model with forecasting attached.")],
        )

    @classmethod
    def execute(cls, model, method: str, speed: str, interval: int, threshold: float, order: int, degree: int,
                granularity: str, start_percent: float, end_percent: float, warmup_steps: int,
                final_steps: int, memory: float = AUTO) -> io.NodeOutput:
        adapter = adapter_of(model)
        if speed != CUSTOM:
            preset = forecast_preset(adapter.name)
            interval, warmup_steps = preset.interval(speed), preset.warmup_steps
        settings = ForecastSettings(method=method, interval=interval, threshold=threshold, order=order,
                                    degree=degree, granularity=granularity, start_percent=start_percent,
                                    end_percent=end_percent, warmup_steps=warmup_steps,
                                    final_steps=None if final_steps < 0 else final_steps, memory_gib=memory)
        if settings.granularity == "model" and not adapter.has_model_wrapper:
            log.warning("dit-accel: %s models have no whole-model hook in ComfyUI; DiT Forecast forecasts the block "
                        "stack's residual instead of the model output.", adapter.name)
            settings = dataclasses.replace(settings, granularity="stack")
        return io.NodeOutput(apply_patch(model, settings.patch(), adapter=adapter))


NODES = [DiTForecast]
