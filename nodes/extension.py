"""ComfyUI's V3 entry point: the list of dit-accel nodes."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import reference_nodes


class DiTAccelExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*reference_nodes.NODES]


async def comfy_entrypoint() -> DiTAccelExtension:
    return DiTAccelExtension()
