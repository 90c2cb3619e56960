"""LTX-2 audio-video model (`comfy/ldm/lightricks/av_model.py` `LTXAVModel`, a subclass of LTXVModel).

Hooks used, no forward copied (checked against ComfyUI 0.8.0 and 0.33.0; both have the class):
  * `patches_replace["dit"][("double_block", i)]` in `LTXAVModel._process_transformer_blocks`: args {"img": (video,
    audio), "v_context", "a_context", "attention_mask", "v_timestep", "a_timestep", "v_pe", "a_pe", "v_cross_pe",
    "a_cross_pe", "v_cross_scale_shift_timestep", "a_cross_scale_shift_timestep", "v_cross_gate_timestep",
    "a_cross_gate_timestep", "transformer_options"} (+ "self_attention_mask", "v_prompt_timestep",
    "a_prompt_timestep" in 0.33.0), returns {"img": (video, audio)}. Patches see the two streams as "img" (video
    tokens) and "audio" (audio tokens), one tensor each; `flatten` / `unflatten` translate at the hook.
  * attention through `optimized_attention_override`: (B, L, H*D), heads positional; video self/cross attention,
    audio self/cross attention (other heads and head size), and the audio<->video cross attention between them.
  * DIFFUSION_MODEL wrapper (LTXVModel.forward): transformer_options at args[5]; x is the list [video, audio].
No block keys are written into transformer_options: the host's replacement knows the block.
0.33.0 may pass `v_timestep` as a `CompressedTimestep` object, which a patch running a block on a subset of the batch
rows cannot slice; with one latent per batch (the usual case) rows are never split.
"""
from __future__ import annotations

import inspect

from .base import BlockKind, FamilyAdapter
from .registry import register_adapter


def _flatten(args: dict) -> dict:
    streams = args.get("img")
    if not isinstance(streams, (tuple, list)):
        return args
    video, audio = streams
    return {**args, "img": video, "audio": audio}


def _unflatten(args: dict) -> dict:
    if "audio" not in args:
        return args
    out = {k: v for k, v in args.items() if k != "audio"}
    out["img"] = (args["img"], args["audio"])
    return out


@register_adapter
class LTXAVAdapter(FamilyAdapter):
    name = "ltxav"
    class_names = ("LTXAVModel",)
    block_prefixes = ("transformer_blocks",)
    block_kinds = (BlockKind("block", "double_block", lambda m: len(m.transformer_blocks), ("img", "audio"),
                             flatten=_flatten, unflatten=_unflatten),)
    transformer_options_arg = 5
    # The video stream's heads; the audio stream has its own count (audio_num_attention_heads), and a head index
    # beyond it is skipped there with a warning.
    head_count_paths = ("num_attention_heads",)

    def model_input(self, args: tuple, kwargs: dict):
        x = super().model_input(args, kwargs)
        return x[0] if isinstance(x, (list, tuple)) else x  # [video, audio]: the video latent carries the batch

    def missing_hooks(self, model_class: type) -> list[str]:
        # The audio-video loop is LTXAV's own method; LTXVModel's video-only loop (which also names "double_block")
        # must not vouch for it, so read only the method the model runs.
        try:
            source = inspect.getsource(model_class._process_transformer_blocks)
        except AttributeError:
            return ['patches_replace["dit"][("double_block", i)] (no _process_transformer_blocks)']
        except (OSError, TypeError):
            return []
        return [] if '"double_block"' in source or "'double_block'" in source else \
            ['patches_replace["dit"][("double_block", i)]']
    sequence_parallel_refusal = ("its blocks carry a video and an audio stream with rotary pairs and cross-modal "
                                 "attention, which the token split does not map yet")
