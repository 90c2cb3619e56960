"""The "DiT Block Cache" node: skip transformer blocks whose output barely changes."""
from __future__ import annotations

import dataclasses

from comfy_api.latest import io

from ..accel.caching import LEVELS, BlockCacheConfig, BlockCachePatch, preset
from ..accel.caching.block_cache import GATES, GRANULARITIES
from ..accel.memory import AUTO
from ..accel.presets import REFERENCE_FAMILY
from .comfy.patcher import adapter_of, apply_patch
from .compat import ADVANCED
from .memory_input import memory_budget_input

CUSTOM = "custom"
_DEFAULT = preset(REFERENCE_FAMILY, "balanced")  # "custom" starts from the measured balanced setting


class DiTBlockCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelBlockCache",
            display_name="DiT Block Cache",
            category="dit-accel",
            description="Skips transformer blocks whose input barely moved since they were last computed and "
                        "forecasts their residual from the computed steps (TaylorSeer) instead of recomputing it. "
                        "Chains with other dit-accel nodes and with core nodes. Logs blocks "
                        "computed and the compute speedup after each run, and says so when a schedule is too short "
                        "to cache (few-step distilled models).",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to accelerate (any family dit-accel supports: "
                                                "Wan, Flux, Chroma, Qwen-Image, HunyuanVideo, SD3, LTX-Video / LTX-2, "
                                                "Lumina 2 / Z-Image, and the reference model)."),
                io.Combo.Input("speed", options=[*LEVELS, CUSTOM], default="balanced",
                               tooltip="Per-family presets. quality: the fewest skips, closest to the full model. "
                                       "balanced: more skips, nearly identical. fast: the most skips, visible "
                                       "changes. The run's log line says the speedup reached. custom: use the "
                                       "advanced settings below."),
                io.Float.Input("threshold", default=_DEFAULT.threshold, min=0.0, max=10.0, step=0.01,
                               **ADVANCED, tooltip="custom only: accumulated relative change under which a "
                                                      "block is reused. 0 turns caching off (exact output)."),
                io.Combo.Input("gate", options=list(GATES), default=_DEFAULT.gate, **ADVANCED,
                               tooltip="custom only: block = decide per block from how far its input moved; "
                                       "first_block = compute the first block, skip the rest while its output is "
                                       "steady; static = compute every `interval` steps."),
                io.Combo.Input("granularity", options=list(GRANULARITIES), default=_DEFAULT.granularity,
                               **ADVANCED, tooltip="custom only: stack = reuse the residual of the whole stack "
                                                      "after the gate blocks; block = of each block (the block gate "
                                                      "always works per block); span = on Flux / HunyuanVideo one "
                                                      "residual over the single blocks while the double blocks run "
                                                      "(one hidden state kept; elsewhere the same as stack)."),
                io.Int.Input("interval", default=_DEFAULT.interval, min=1, max=10, **ADVANCED,
                             tooltip="custom, static gate only: compute every N-th step."),
                io.Float.Input("start_percent", default=_DEFAULT.start_percent, min=0.0, max=1.0, step=0.01,
                               **ADVANCED,
                               tooltip="custom only: no reuse before this fraction of the schedule."),
                io.Float.Input("end_percent", default=_DEFAULT.end_percent, min=0.0, max=1.0, step=0.01,
                               **ADVANCED,
                               tooltip="custom only: no reuse after this fraction of the schedule."),
                io.Int.Input("warmup_steps", default=_DEFAULT.warmup_steps, min=0, max=100, **ADVANCED,
                             tooltip="custom only: first steps always computed."),
                io.Int.Input("final_steps", default=_DEFAULT.final_steps, min=0, max=100, **ADVANCED,
                             tooltip="custom only: last steps always computed (skipping the final step costs "
                                     "the most detail)."),
                io.Int.Input("max_consecutive", default=_DEFAULT.max_consecutive, min=0, max=100, **ADVANCED,
                             tooltip="custom only: at most this many reuses in a row before a block is computed "
                                     "again."),
                io.Int.Input("forecast_order", default=_DEFAULT.forecast_order, min=0, max=3, **ADVANCED,
                             tooltip="custom only: 0 reuses a skipped block's cached residual; 1-3 forecast it "
                                     "with a Taylor expansion over the computed steps (TaylorSeer; the presets use "
                                     "2)."),
                memory_budget_input("history in bf16, a static schedule on the block stack instead of each block, history in CPU memory, lower Taylor order, caching off"),
            ],
            outputs=[io.Model.Output(tooltip="The model with block caching attached.")],
        )

    @classmethod
    def execute(cls, model, speed: str, threshold: float, gate: str, granularity: str, interval: int,
                start_percent: float, end_percent: float, warmup_steps: int, final_steps: int,
                max_consecutive: int, forecast_order: int, memory: float = AUTO) -> io.NodeOutput:
        adapter = adapter_of(model)
        if speed == CUSTOM:
            config = BlockCacheConfig(threshold=threshold, gate=gate, granularity=granularity, interval=interval,
                                      start_percent=start_percent, end_percent=end_percent,
                                      warmup_steps=warmup_steps, final_steps=final_steps,
                                      max_consecutive=max_consecutive, forecast_order=forecast_order)
        else:
            config = preset(adapter.name, speed)
        config = dataclasses.replace(config, memory_gib=memory)
        return io.NodeOutput(apply_patch(model, BlockCachePatch(config), adapter=adapter))


NODES = [DiTBlockCache]
