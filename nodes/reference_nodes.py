"""Nodes for the bundled reference model: load it, condition it on a digit, make its empty latent, decode it."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..reference import latent as codec
from ..reference.assets import MODEL_FILE
from ..reference.conditioning import UNCONDITIONAL, label_context
from .comfy import loader

CATEGORY = "dit-accel/reference"
LABELS = [str(d) for d in range(10)] + ["unconditional"]


class ReferenceModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelReferenceModelLoader",
            display_name="DiT Reference Model (digits)",
            category=CATEGORY,
            description="Loads dit-accel's bundled 8-block Wan 2.1-format digits model through ComfyUI's own loader.",
            inputs=[],
            outputs=[io.Model.Output(tooltip="The reference model, loaded as ComfyUI's WAN21.")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(loader.load_diffusion_model(MODEL_FILE))


class DigitLabel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelDigitLabel",
            display_name="DiT Digit Label",
            category=CATEGORY,
            description="Conditioning for the reference model: which digit to draw.",
            inputs=[io.Combo.Input("digit", options=LABELS, default="3",
                                   tooltip="The digit to draw; 'unconditional' is the negative for CFG.")],
            outputs=[io.Conditioning.Output(tooltip="Connect to a sampler's positive (a digit) or negative "
                                                    "('unconditional').")],
        )

    @classmethod
    def execute(cls, digit: str) -> io.NodeOutput:
        label = UNCONDITIONAL if digit == "unconditional" else int(digit)
        return io.NodeOutput([[label_context([label]), {}]])


class DigitEmptyLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelDigitEmptyLatent",
            display_name="DiT Digit Empty Latent",
            category=CATEGORY,
            description="An empty 16-channel Wan 2.1-format latent for the reference model (4 pixels per latent).",
            inputs=[
                io.Int.Input("size", default=codec.IMAGE_SIZE, min=32, max=512, step=8,
                             tooltip="Image width and height in pixels; the model was trained at 128."),
                io.Int.Input("batch_size", default=1, min=1, max=256, tooltip="How many images to sample."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, size: int, batch_size: int) -> io.NodeOutput:
        side = size // codec.UNSHUFFLE
        return io.NodeOutput({"samples": torch.zeros(batch_size, codec.LATENT_CHANNELS, 1, side, side)})


class DigitDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelDigitDecode",
            display_name="DiT Digit Decode",
            category=CATEGORY,
            description="Decodes a reference-model latent to an image (an exact pixel-shuffle, no VAE needed).",
            inputs=[io.Latent.Input("samples", tooltip="The sampler's output latent.")],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, samples) -> io.NodeOutput:
        images = codec.decode(samples["samples"])  # (B, 1, H, W)
        return io.NodeOutput(images.movedim(1, -1).expand(-1, -1, -1, 3).contiguous())


NODES = [ReferenceModelLoader, DigitLabel, DigitEmptyLatent, DigitDecode]
