"""ComfyUI's V3 entry point: the list of dit-accel nodes."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import block_cache_node, forecast_node, head_guidance_node, quantize_node, reference_nodes, sparse_attention_node
from . import multi_gpu_node
from .comfy import quant_layout

# One module per capability, each with a NODES list.
NODE_MODULES = (block_cache_node, forecast_node, reference_nodes, head_guidance_node, sparse_attention_node,
                quantize_node, multi_gpu_node)


class DiTAccelExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [node for module in NODE_MODULES for node in module.NODES]


async def comfy_entrypoint() -> DiTAccelExtension:
    # Once, when ComfyUI loads the pack (never as an import side effect): the TLQ layouts and the one wrapped core
    # loader function that lets UNETLoader read TLQ files (see nodes/comfy/quant_layout.py).
    quant_layout.install()
    return DiTAccelExtension()
