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

Sequence parallelism splits the video tokens only; the audio stream and both text contexts stay whole on every rank
(audio is short: a few tokens per second). The video rotary tables (`v_pe`, and `v_cross_pe` for the audio-video
cross-attention) are tuples with the tokens on dim 1 in both versions, split per tensor; the video timesteps
(`v_timestep` and the two cross-attention ones) are split when they carry a row per token, and 0.33.0's
`CompressedTimestep` is expanded to its (B, L, C) tensor for that (`expand()`, read by duck typing: no ComfyUI import
here). Audio-to-video cross-attention (video queries) runs locally; video-to-audio (audio queries onto the video)
gathers every rank's video keys and values (`cross_onto_image`).
Per-token timesteps (a denoise mask: image-to-video) are refused for now: the DIFFUSION_MODEL wrapper sees the
timestep after `LTXAVModel.forward` has split its (video, audio) tuple, and the workers replay `forward` itself, which
then takes the video timestep for the audio one too (`kwargs["a_timestep"] = timestep`). That is harmless when both are
one value per sample, wrong otherwise; it needs the workers to replay the wrapped `_forward` instead.
"""
from __future__ import annotations

import inspect

from .base import BlockKind, FamilyAdapter, SequenceLayout
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


_PER_TOKEN_TIMESTEPS = ("the worker processes replay LTXAVModel.forward, which rebuilds the audio timestep from "
                        "the video one (a denoise mask: image-to-video)")


def _expanded_timestep(value):
    """LTX-2's CompressedTimestep (per-frame rows) as the (B, L, C) tensor it stands for."""
    expand = getattr(value, "expand", None)
    return expand() if callable(expand) else value


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
    sequence_layout = SequenceLayout(
        pe_key="v_pe", pe_token_dim=1, extra_pe_keys=("v_cross_pe",),
        token_keys=("v_timestep", "v_cross_scale_shift_timestep", "v_cross_gate_timestep"),
        token_tensor=_expanded_timestep, whole_keys=("audio", "v_context", "a_context"), cross_onto_image=True,
        refuse_keys=(("self_attention_mask", "a guide self-attention mask (keyframe or IC-LoRA guide tokens)"),),
        single_row_keys=tuple((key, _PER_TOKEN_TIMESTEPS) for key in ("v_timestep", "a_timestep")))
