"""Family facts the core asks the adapter for, instead of spelling them out where they are used."""
from __future__ import annotations

import torch

from dit_accel.accel.adapters.flux import FluxAdapter
from dit_accel.accel.adapters.hunyuan_video import HunyuanVideoAdapter
from dit_accel.accel.adapters.ltxav import LTXAVAdapter
from dit_accel.accel.adapters.qwen_image import QwenImageAdapter
from dit_accel.accel.adapters.wan import WanAdapter


def test_img_slice_is_read_only_where_it_belongs_to_the_block():
    options = {"img_slice": [7, 40]}
    for adapter in (FluxAdapter(), HunyuanVideoAdapter()):
        assert adapter.image_span("single", options) == (7, 40)
        assert adapter.image_span("double", options) is None  # written for the single blocks: stale here
    assert QwenImageAdapter().image_span("block", options) == (7, 40)
    assert FluxAdapter().image_span("single", {}) is None


def test_only_wan_reports_its_token_grid():
    options = {"grid_sizes": torch.tensor([2, 8, 12])}
    assert WanAdapter().grid_hint(options) == (2, 8, 12)
    assert WanAdapter().grid_hint({}) is None
    assert FluxAdapter().grid_hint(options) is None


def test_the_model_input_is_the_tensor_that_carries_the_batch():
    video, audio = torch.zeros(2, 3), torch.zeros(2, 5)
    assert LTXAVAdapter().model_input(([video, audio],), {}) is video
    assert WanAdapter().model_input((), {"x": video}) is video
