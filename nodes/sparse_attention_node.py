"""The "DiT Sparse Attention" node: block-sparse self-attention of image/video tokens, chosen by a mask policy."""
from __future__ import annotations

from comfy_api.latest import io

from ..accel.presets import REFERENCE_FAMILY
from ..accel.sparse import LEVELS, POLICIES, SparseAttentionConfig, SparseAttentionPatch, parse_layers, preset
from .comfy.patcher import adapter_of, apply_patch
from .compat import ADVANCED

CUSTOM = "custom"
BLOCK_SIZES = ("16", "32", "64", "128")
_DEFAULT = preset(REFERENCE_FAMILY, "balanced")  # "custom" starts from the balanced preset


class DiTSparseAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelSparseAttention",
            display_name="DiT Sparse Attention",
            category="dit-accel",
            description="Computes only the important blocks of the image/video self-attention (text tokens and "
                        "cross-attention stay dense) and, with PISA, estimates the rest instead of dropping it. "
                        "Chains onto any attention override already on the model (Sage, core sparse attention). "
                        "Logs after each run how much attention work was skipped and which route every call took "
                        "(Triton kernel, torch reference fallback, dense).",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (any family dit-accel supports)."),
                io.Combo.Input("speed", options=[*LEVELS, CUSTOM], default="balanced",
                               tooltip="quality / balanced / fast: the family's preset (PISA at 50 / 75 / 90% "
                                       "block sparsity). custom: use the settings below."),
                io.Combo.Input("policy", options=sorted(POLICIES), default=_DEFAULT.policy,
                               tooltip="custom only. pisa: exact critical blocks + Taylor estimate of the rest. "
                                       "sol-attn: core's adaptive threshold. draft: low-res draft map with "
                                       "patch reordering. cluster: k-means semantic permutation. grat / window: "
                                       "static local patterns. dense: every block (exact)."),
                io.Float.Input("sparsity", default=_DEFAULT.sparsity, min=0.0, max=0.98, step=0.05,
                               tooltip="custom only: fraction of key blocks each query block skips. 0 with policy "
                                       "dense gives the unpatched output. Ignored by sol-attn (threshold)."),
                io.Float.Input("top_p", default=0.0, min=0.0, max=1.0, step=0.01, **ADVANCED,
                               tooltip="custom only: if above 0, keep the fewest blocks holding this share of the "
                                       "estimated attention (pisa, draft, cluster) instead of a fixed sparsity."),
                io.Int.Input("warmup_steps", default=_DEFAULT.warmup_steps, min=0, max=100,
                             tooltip="custom only: the first steps run dense attention (they set the layout)."),
                io.String.Input("dense_layers", default="", **ADVANCED,
                                tooltip="custom only: transformer blocks that always run dense, e.g. '0, 1, 38-39' "
                                        "(positions in the model's block loop)."),
                io.Combo.Input("block_size", options=list(BLOCK_SIZES), default=str(_DEFAULT.block_size),
                               **ADVANCED, tooltip="custom only: tokens per attention block. 64 suits long video "
                                                     "sequences; smaller blocks for short image sequences."),
            ],
            outputs=[io.Model.Output(tooltip="The model with sparse attention attached.")],
        )

    @classmethod
    def execute(cls, model, speed: str, policy: str, sparsity: float, warmup_steps: int, top_p: float = 0.0,
                dense_layers: str = "", block_size: str = str(_DEFAULT.block_size)) -> io.NodeOutput:
        adapter = adapter_of(model)
        if speed == CUSTOM:
            config = SparseAttentionConfig(policy=policy, sparsity=sparsity, top_p=top_p if top_p > 0 else None,
                                           block_size=int(block_size), warmup_steps=warmup_steps,
                                           dense_layers=parse_layers(dense_layers))
        else:
            config = preset(adapter.name, speed)
        return io.NodeOutput(apply_patch(model, SparseAttentionPatch(config), adapter=adapter))


NODES = [DiTSparseAttention]
