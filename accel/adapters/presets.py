"""Per-family facts and defaults: block kinds and which blocks are safe to skip, attention layout, typical step
counts (base and distilled variants) and the cache threshold, each number with where it comes from. Family facts live
only in this package; the block cache's presets (accel/caching/presets.py) read the threshold and whether it was
measured from here.

Sources are kept next to each value (`sources`, one entry per numeric field, checked by tests/accel/test_adapter_presets.py):
a paper, a peer project's published table, a model card, or "our measurement". Peer thresholds are in the peer's own
units (TeaCache's accumulated rescaled relative L1, MagCache's accumulated magnitude-ratio error); they are kept as
reference points, not as our gate's threshold. Our block gate's threshold was measured on the reference model only
(Wan 2.1 format, accel/caching/presets.py); other families use it until measured, and say so (`measured=False`).
"Not re-checked" marks numbers recalled from a model card that were not re-read while writing this table.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FamilyPreset:
    family: str                       # adapter name (accel/adapters/registry.py)
    block_kinds: tuple[str, ...]      # the adapter's block kinds, in loop order
    attention_layout: str             # what one attention call holds, as the adapter hands it to patches
    skip_notes: str                   # which blocks are safe to skip, and why
    always_compute_first: int         # blocks at the start of the loop always computed (the gate's signal)
    steps: int | None                 # typical step count of the base model (None: no source found)
    distilled_steps: int | None       # typical step count of its distilled variant, if one is in use
    cache_threshold: float            # our block gate's threshold (accel/caching block gate, block granularity)
    measured: bool                    # cache_threshold measured on this family (else borrowed from Wan)
    teacache_rel_l1: float | None = None   # peer reference point: TeaCache's recommended rel_l1_thresh
    magcache_thresh: float | None = None   # peer reference point: MagCache's recommended magcache_thresh
    sources: dict[str, str] = field(default_factory=dict)  # numeric field -> where the number comes from

    def __post_init__(self):
        numbers = [f for f in ("always_compute_first", "steps", "distilled_steps", "cache_threshold",
                               "teacache_rel_l1", "magcache_thresh") if getattr(self, f) is not None]
        missing = [f for f in numbers if f not in self.sources]
        if missing:
            raise ValueError(f"{self.family}: no source for {missing}")
        if self.distilled_steps is not None and self.steps is not None and self.distilled_steps >= self.steps:
            raise ValueError(f"{self.family}: distilled_steps must be below steps")


# Shared sources.
FBCACHE = ("ParaAttention's First Block Cache (FBCache): block 0 always runs, its residual change gates the rest; "
           "our block cache's first_block gate follows it")
OURS_WAN = ("our measurement: reference model (Wan 2.1 format), block gate threshold 1.0 with order-2 forecast on "
            "the step axis (accel/caching/presets.py has the measured speed and PSNR per level)")
BORROWED = "borrowed from the Wan measurement (" + OURS_WAN + "); not measured on this family"
TEACACHE_COMFY = "ComfyUI-TeaCache README, recommended rel_l1_thresh table (welltop-cn/ComfyUI-TeaCache)"
MAGCACHE_COMFY = "ComfyUI-MagCache README, recommended magcache_thresh table (Zehong-Ma/ComfyUI-MagCache)"
SPLIT_KINDS = ("several block kinds: reuse per block, since a stack residual cannot span double -> single blocks "
               "(the joint sequence changes shape); found by tests/comfyui/test_families.py")

PRESETS: dict[str, FamilyPreset] = {p.family: p for p in (
    FamilyPreset(
        "wan", ("block",), "self over video tokens (B, H, L, D); cross to text tokens (and CLIP image tokens in i2v)",
        "any block after the first; the final step must be computed (skipping it cost ~5 dB)",
        1, 50, 4, 1.0, True, teacache_rel_l1=0.2, magcache_thresh=0.24,
        sources={"always_compute_first": FBCACHE,
                 "steps": "Wan2.1 repository generate.py default sample_steps for t2v (not re-checked)",
                 "distilled_steps": "Wan 2.2 Lightning / lightx2v 4-step distillation LoRAs (not re-checked)",
                 "cache_threshold": OURS_WAN,
                 "teacache_rel_l1": TEACACHE_COMFY + ": Wan2.1-T2V-14B 0.2 (~1.9x); 1.3B 0.08 (~1.6x)",
                 "magcache_thresh": MAGCACHE_COMFY + ": Wan2.1-T2V-14B 0.24, K=6; 1.3B 0.12, K=4"}),
    FamilyPreset(
        "flux", ("double", "single"), "joint [text | image] tokens, (B, H, L, D) with skip_reshape",
        "any block after the first; " + SPLIT_KINDS,
        1, 50, 4, 1.0, False, teacache_rel_l1=0.4, magcache_thresh=0.24,
        sources={"always_compute_first": FBCACHE,
                 "steps": "FLUX.1-dev model card example, num_inference_steps=50 (not re-checked)",
                 "distilled_steps": "FLUX.1-schnell model card: 1 to 4 steps (not re-checked)",
                 "cache_threshold": BORROWED,
                 "teacache_rel_l1": TEACACHE_COMFY + ": FLUX 0.4, max_skip_steps 3 (~2x)",
                 "magcache_thresh": MAGCACHE_COMFY + ": FLUX 0.24, retention 0.1, K=5"}),
    FamilyPreset(
        "chroma", ("double", "single"), "joint [text | image] tokens, (B, H, L, D) with skip_reshape",
        "any block after the first; " + SPLIT_KINDS + "; blocks Chroma itself skips (skip_mmdit / skip_dit) never "
        "reach the hook",
        1, None, None, 1.0, False, magcache_thresh=0.10,
        sources={"always_compute_first": FBCACHE,
                 "cache_threshold": BORROWED,
                 "magcache_thresh": MAGCACHE_COMFY + ": Chroma 0.10, retention 0.25, K=2"}),
    FamilyPreset(
        "qwen_image", ("block",), "joint [text | image] tokens, (B, L, H*D) handed over as (B, H, L, D)",
        "any block after the first",
        1, 50, 8, 1.0, False, magcache_thresh=0.10,
        sources={"always_compute_first": FBCACHE,
                 "steps": "Qwen-Image model card example, num_inference_steps=50 (not re-checked)",
                 "distilled_steps": "Qwen-Image-Lightning 8-step LoRA (a 4-step one also exists; not re-checked)",
                 "cache_threshold": BORROWED,
                 "magcache_thresh": MAGCACHE_COMFY + ": Qwen-Image 0.10, retention 0.20, K=2 (1.75x)"}),
    FamilyPreset(
        "hunyuan_video", ("double", "single"),
        "joint text and video tokens; image first on ComfyUI 0.8.0, text first on 0.33.0",
        "any block after the first; " + SPLIT_KINDS,
        1, 50, None, 1.0, False, teacache_rel_l1=0.15, magcache_thresh=0.24,
        sources={"always_compute_first": FBCACHE,
                 "steps": "HunyuanVideo repository sample script, --infer-steps 50 (not re-checked)",
                 "cache_threshold": BORROWED,
                 "teacache_rel_l1": TEACACHE_COMFY + ": HunyuanVideo 0.15, max_skip_steps 3 (~1.9x)",
                 "magcache_thresh": MAGCACHE_COMFY + ": HunyuanVideo-T2V 0.24, K=6; 1.5 (20 steps) 0.03, K=2"}),
    FamilyPreset(
        "sd3", ("block",), "joint [context | x] tokens; q, k (B, L, H*D), v (B, L, H, D); head size 64",
        "any block after the first; the last block is context pre-only (its text output is None)",
        1, 28, 4, 1.0, False, teacache_rel_l1=0.2,
        sources={"always_compute_first": FBCACHE,
                 "steps": "SD3.5 Large model card: 28 steps, guidance 3.5 (not re-checked)",
                 "distilled_steps": "SD3.5 Large Turbo model card: 4 steps, guidance 0 (not re-checked)",
                 "cache_threshold": BORROWED,
                 "teacache_rel_l1": "TeaCache4SD3 README: 0.2 -> 1.60x, 0.3 -> 1.80x, 0.4 -> 2.38x (A100)"}),
    FamilyPreset(
        "ltxv", ("block",), "self over video tokens, cross to text; (B, L, H*D)",
        "any block after the first",
        1, 50, 8, 1.0, False, teacache_rel_l1=0.06,
        sources={"always_compute_first": FBCACHE,
                 "steps": "diffusers LTXPipeline default num_inference_steps (not re-checked)",
                 "distilled_steps": "LTX-Video distilled checkpoints, 8 steps (not re-checked)",
                 "cache_threshold": BORROWED,
                 "teacache_rel_l1": TEACACHE_COMFY + ": LTX-Video 0.06, max_skip_steps 3 (~1.7x)"}),
    FamilyPreset(
        "ltxav", ("block",),
        "video self/cross, audio self/cross (other heads and head size), audio<->video cross attention",
        "any block after the first; one block computes video and audio together, so both streams are skipped or "
        "computed together",
        1, 25, 8, 1.0, False,
        sources={"always_compute_first": FBCACHE,
                 "steps": "ai-toolkit LTX-2 reference pipeline default sample_steps=25 (RunComfy docs)",
                 "distilled_steps": "Lightricks LTX-2.5 model discussion #20: 'distilled is 8 step model'",
                 "cache_threshold": BORROWED}),
    FamilyPreset(
        "lumina", ("layer",),
        "joint [text | image] tokens in the main layers; refiners attend within one stream; (B, H, L, D)",
        "any main layer after the first; the context and noise refiners run outside the hooked loop and are "
        "always computed",
        1, 50, 8, 1.0, False, teacache_rel_l1=0.3,
        sources={"always_compute_first": FBCACHE,
                 "steps": "Z-Image base: 50 steps (Chutes Z-Image Turbo docs: 'from the base model's 50 steps')",
                 "distilled_steps": "Z-Image-Turbo: 8 NFEs (diffusers Z-Image docs / model card)",
                 "cache_threshold": BORROWED,
                 "teacache_rel_l1": "TeaCache4Lumina2 README (Lumina-Image-2.0): v1 coefficients 0.3 -> 1.56x, "
                                    "0.4 -> 2.08x"}),
)}


def family_preset(family: str) -> FamilyPreset:
    """The defaults for one adapter family, or a clear error naming the families that have them."""
    if family not in PRESETS:
        raise KeyError(f"no family preset for {family!r}; families with presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[family]
