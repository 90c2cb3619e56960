"""The shapes users run, each checked against ComfyUI's own model detection and the model's published config.

ComfyUI reads width and depth from the checkpoint (`comfy/model_detection.py`, `detect_unet_config`): Wan 2.1
`dim` = `head.modulation.shape[-1]`, `num_heads` = dim // 128, `num_layers` = count of `blocks.N.`; Flux and
HunyuanVideo `hidden_size` from `img_in`, `num_heads` = hidden // 128 (Flux: hidden // sum(axes_dim) = 3072 // 128),
`depth` / `depth_single_blocks` = counts of `double_blocks.N.` / `single_blocks.N.`; Qwen-Image `num_layers` =
count of `transformer_blocks.N.` with 24 heads x 128 (`comfy/ldm/qwen_image/model.py` defaults). The counts
themselves are the released checkpoints' (Wan2.1 `wan/configs/wan_t2v_14B.py` / `wan_t2v_1_3B.py`: 5120 / 40
layers / FFN 13824 and 1536 / 30 / 8960; FLUX.1-dev 19 + 38 blocks, MLP ratio 4; HunyuanVideo 20 + 40, MLP 4;
Qwen-Image 60 blocks, MLP 4). Tokens: latents are 8x smaller per side (4x in time for video, frames (F - 1) / 4 + 1)
and patchified 2x2, as `comfy/latent_formats.py` and each model's patch size say. Text tokens in the joint sequence:
ComfyUI pads Flux's T5 prompt to 256 tokens (`comfy/text_encoders/flux.py`, `min_length=256`; the issue's 512 is
diffusers' `max_sequence_length`), HunyuanVideo's LLaMA prompt and Qwen-Image's Qwen2.5-VL prompt keep their own
length after the template is cropped (`min_length=1`; a 77-token prompt is assumed); Wan's 512 umT5 tokens are
cross-attention context, outside the hidden stream. Rows per call: 2 under CFG (Wan, Qwen-Image); 1 for the
guidance-distilled Flux-dev and HunyuanVideo. Checked against ComfyUI 0.33.0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...accel.memory import StateShape

PROMPT_TOKENS = 77  # a typical prompt, where the text stream keeps the prompt's own length


@dataclass(frozen=True)
class Shape:
    name: str
    family: str                       # the adapter name
    width: int
    heads: int
    ffn: int                          # the MLP's hidden width
    blocks: tuple[tuple[str, int], ...]   # (kind, count) in loop order
    latent: tuple[int, ...]           # (channels, frames, height, width) of the latent
    patch: tuple[int, int, int]       # (frames, height, width) per token
    text_tokens: int                  # text tokens in the joint sequence (0: cross-attention only)
    rows: int                         # batch rows per model call (2 under CFG)
    dtype: torch.dtype = torch.bfloat16

    @property
    def image_tokens(self) -> int:
        return math.prod(n // p for n, p in zip(self.latent[1:], self.patch))

    @property
    def depth(self) -> int:
        return sum(n for _, n in self.blocks)

    @property
    def stream_keys(self) -> dict[str, tuple[str, ...]]:
        """Stream keys each block kind hands over (as the family's adapter declares them)."""
        first = ("img", "txt") if self.text_tokens else ("img",)
        return {kind: first if i == 0 else ("img",) for i, (kind, _) in enumerate(self.blocks)}

    def state_shape(self) -> StateShape:
        """What a method's state is planned from at this shape (`accel/memory.py`)."""
        streams = [("img", (self.rows, self.image_tokens, self.width))]
        if self.text_tokens:
            streams.append(("txt", (self.rows, self.text_tokens, self.width)))
        keys = self.stream_keys
        layout = tuple((kind, keys[kind]) for kind, n in self.blocks for _ in range(n))
        conds = tuple((i, i + 1) for i in range(self.rows)) if self.rows > 1 else ((0, 1),)
        return StateShape(tuple(streams), self.dtype, layout, (self.rows, *self.latent), conds)


def _wan(name: str, width: int, ffn: int, layers: int, frames: int, height: int, width_px: int) -> Shape:
    latent = (16, (frames - 1) // 4 + 1, height // 8, width_px // 8)
    return Shape(name, "wan", width, width // 128, ffn, (("block", layers),), latent, (1, 2, 2), 0, 2)


SHAPES: dict[str, Shape] = {s.name: s for s in (
    _wan("wan-14b-480p-81f", 5120, 13824, 40, 81, 480, 832),
    _wan("wan-14b-720p-81f", 5120, 13824, 40, 81, 720, 1280),
    _wan("wan-1.3b-480p-81f", 1536, 8960, 30, 81, 480, 832),
    Shape("flux-dev-1024", "flux", 3072, 24, 4 * 3072, (("double", 19), ("single", 38)), (16, 1, 128, 128),
          (1, 2, 2), 256, 1),
    Shape("qwen-image-1328", "qwen_image", 3072, 24, 4 * 3072, (("block", 60),), (16, 1, 166, 166), (1, 2, 2),
          PROMPT_TOKENS, 2),
    Shape("hunyuan-video-720p-129f", "hunyuan_video", 3072, 24, 4 * 3072, (("double", 20), ("single", 40)),
          (16, 33, 90, 160), (1, 2, 2), PROMPT_TOKENS, 1),
    # The GPU check's shape: Wan 1.3B at full depth, 480p x 33 frames (9 latent frames).
    _wan("wan-1.3b-480p-33f", 1536, 8960, 30, 33, 480, 832),
)}


def get_shape(name: str) -> Shape:
    if name not in SHAPES:
        raise SystemExit(f"unknown shape {name!r}; available: {', '.join(SHAPES)}")
    return SHAPES[name]
