"""Regenerate the example workflows (ComfyUI's UI format): `python workflows/make_workflows.py`.

Kept as code so a renamed input or a new node updates every workflow at once; tests/comfyui/test_workflows.py checks
the JSON files against each ComfyUI snapshot's node registry.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Graph:
    def __init__(self):
        self.nodes, self.links = [], []

    def node(self, type_, widgets=(), inputs=(), outputs=(), pos=(0, 0), title=None):
        nid = len(self.nodes) + 1
        node = {"id": nid, "type": type_, "pos": list(pos), "size": [320, 120], "flags": {}, "order": nid - 1,
                "mode": 0, "inputs": [{"name": n, "type": t, "link": None} for n, t in inputs],
                "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
                "properties": {"Node name for S&R": type_}, "widgets_values": list(widgets)}
        if title:
            node["title"] = title
        self.nodes.append(node)
        return nid

    def link(self, src, src_slot, dst, dst_input):
        lid = len(self.links) + 1
        src_node, dst_node = self.nodes[src - 1], self.nodes[dst - 1]
        out = src_node["outputs"][src_slot]
        slot = next(i for i, inp in enumerate(dst_node["inputs"]) if inp["name"] == dst_input)
        out["links"].append(lid)
        dst_node["inputs"][slot]["link"] = lid
        self.links.append([lid, src, src_slot, dst, slot, out["type"]])

    def to_json(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def sampler(g, x, y, title, steps=20, cfg=4.0):
    return g.node("KSampler", [42, "fixed", steps, cfg, "euler", "simple", 1.0],
                  [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                   ("latent_image", "LATENT")], [("LATENT", "LATENT")], (x, y), title)


def reference_with_and_without_acceleration() -> dict:
    g = Graph()
    model = g.node("DiTAccelReferenceModelLoader", [], [], [("MODEL", "MODEL")], (0, 0))
    cache = g.node("DiTAccelBlockCache", ["balanced", 1.0, "block", "stack", 2, 0.0, 1.0, 1, 1, 3, 2],
                   [("model", "MODEL")], [("MODEL", "MODEL")], (0, 300))
    inputs = _digit_inputs(g)
    _sample_and_preview(g, model, inputs, 400, 0, "full compute")
    _sample_and_preview(g, cache, inputs, 400, 400, "with DiT Block Cache")
    return g.to_json()


def flux_dev_with_block_cache() -> dict:
    """Flux.1-dev text-to-image with the block cache. Flux has no measured preset yet, so `custom` settings: the
    reference model's balanced ones (block gate, at most 2 forecast steps in a row, second-order forecast)."""
    g = Graph()
    unet = g.node("UNETLoader", ["flux1-dev.safetensors", "default"], [], [("MODEL", "MODEL")], (0, 0))
    clip = g.node("DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux"], [],
                  [("CLIP", "CLIP")], (0, 200))
    vae = g.node("VAELoader", ["ae.safetensors"], [], [("VAE", "VAE")], (0, 400))
    cache = g.node("DiTAccelBlockCache", ["custom", 1.0, "block", "stack", 2, 0.0, 1.0, 1, 1, 2, 2],
                   [("model", "MODEL")], [("MODEL", "MODEL")], (350, 0))
    text = g.node("CLIPTextEncode", ["a red fox reading a newspaper in a cafe, film photo"],
                  [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")], (350, 300))
    guidance = g.node("FluxGuidance", [3.5], [("conditioning", "CONDITIONING")],
                      [("CONDITIONING", "CONDITIONING")], (700, 300))
    negative = g.node("ConditioningZeroOut", [], [("conditioning", "CONDITIONING")],
                      [("CONDITIONING", "CONDITIONING")], (700, 450))
    latent = g.node("EmptySD3LatentImage", [1024, 1024, 1], [], [("LATENT", "LATENT")], (350, 550))
    ks = sampler(g, 1050, 0, "Flux with DiT Block Cache", steps=20, cfg=1.0)
    decode = g.node("VAEDecode", [], [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")], (1400, 0))
    save = g.node("SaveImage", ["dit-accel-flux"], [("images", "IMAGE")], [], (1650, 0))
    g.link(unet, 0, cache, "model")
    g.link(cache, 0, ks, "model")
    g.link(clip, 0, text, "clip")
    g.link(text, 0, guidance, "conditioning")
    g.link(text, 0, negative, "conditioning")
    g.link(guidance, 0, ks, "positive")
    g.link(negative, 0, ks, "negative")
    g.link(latent, 0, ks, "latent_image")
    g.link(ks, 0, decode, "samples")
    g.link(vae, 0, decode, "vae")
    g.link(decode, 0, save, "images")
    return g.to_json()


def reference_with_head_guidance() -> dict:
    """The reference model with CFG alone and with CFG + DiT Head Guidance on the shipped HeadHunter preset (its
    own settings), side by side."""
    g = Graph()
    model = g.node("DiTAccelReferenceModelLoader", [], [], [("MODEL", "MODEL")], (0, 0))
    guided_model = g.node("DiTAccelHeadGuidance", [2.0, 1.0, "reference-digits", 0.0, 0.6, True],
                          [("model", "MODEL")], [("MODEL", "MODEL")], (0, 300), "DiT Head Guidance (preset)")
    inputs = _digit_inputs(g)
    _sample_and_preview(g, model, inputs, 400, 0, "CFG alone")
    _sample_and_preview(g, guided_model, inputs, 400, 400, "CFG + head guidance")
    return g.to_json()


def _digit_inputs(g, x=0, y=600):
    digit = g.node("DiTAccelDigitLabel", ["3"], [], [("CONDITIONING", "CONDITIONING")], (x, y))
    negative = g.node("DiTAccelDigitLabel", ["unconditional"], [], [("CONDITIONING", "CONDITIONING")], (x, y + 150))
    latent = g.node("DiTAccelDigitEmptyLatent", [128, 4], [], [("LATENT", "LATENT")], (x, y + 300))
    return digit, negative, latent


def _sample_and_preview(g, model, inputs, x, y, title):
    digit, negative, latent = inputs
    ks = sampler(g, x, y, title)
    g.link(model, 0, ks, "model")
    g.link(digit, 0, ks, "positive")
    g.link(negative, 0, ks, "negative")
    g.link(latent, 0, ks, "latent_image")
    dec = g.node("DiTAccelDigitDecode", [], [("samples", "LATENT")], [("IMAGE", "IMAGE")], (x + 400, y))
    g.link(ks, 0, dec, "samples")
    prev = g.node("PreviewImage", [], [("images", "IMAGE")], [], (x + 700, y))
    g.link(dec, 0, prev, "images")


def reference_quantize_and_save() -> dict:
    """Quantize the reference model to 4-bit TLQ (LRQ-DiT twin-log codebook), calibrated (GPTQ) on the same prompt
    and latent over 4 steps, sample with it, and save it."""
    g = Graph()
    model = g.node("DiTAccelReferenceModelLoader", [], [], [("MODEL", "MODEL")], (0, 0))
    quant = g.node("DiTAccelQuantize", ["tlq-w4", 64, 4, 4.0],
                   [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                    ("latent", "LATENT")], [("MODEL", "MODEL")], (0, 200))
    save = g.node("DiTAccelSaveQuantized", ["diffusion_models/dit_accel_reference_tlq4"], [("model", "MODEL")], [],
                  (0, 400))
    g.link(model, 0, quant, "model")
    g.link(quant, 0, save, "model")
    inputs = _digit_inputs(g)
    for source, name in zip(inputs, ("positive", "negative", "latent")):
        g.link(source, 0, quant, name)
    _sample_and_preview(g, quant, inputs, 400, 0, "quantized TLQ W4A16 (calibrated)")
    return g.to_json()


def quantized_file_with_core_loader_and_lora() -> dict:
    """Load a quantized (TLQ) file with ComfyUI's own Load Diffusion Model, sample plain and with a LoRA on top."""
    g = Graph()
    unet = g.node("UNETLoader", ["dit_accel_reference_tlq4.safetensors", "default"], [], [("MODEL", "MODEL")],
                  (0, 0))
    lora = g.node("LoraLoaderModelOnly", ["your_lora.safetensors", 1.0], [("model", "MODEL")],
                  [("MODEL", "MODEL")], (0, 200))
    g.link(unet, 0, lora, "model")
    inputs = _digit_inputs(g)
    _sample_and_preview(g, unet, inputs, 400, 0, "quantized file, core loader")
    _sample_and_preview(g, lora, inputs, 400, 400, "quantized file + LoRA")
    return g.to_json()


def wan_t2v_with_sparse_attention() -> dict:
    """Wan 2.1 text-to-video (1.3B, 33 frames at 832x480) with the DiT Sparse Attention node on its quality preset
    (PISA at 50 % block sparsity, blocks of 64, two dense warm-up steps)."""
    g = Graph()
    unet = g.node("UNETLoader", ["wan2.1_t2v_1.3B_fp16.safetensors", "default"], [], [("MODEL", "MODEL")], (0, 0))
    clip = g.node("CLIPLoader", ["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan"], [], [("CLIP", "CLIP")], (0, 200))
    vae = g.node("VAELoader", ["wan_2.1_vae.safetensors"], [], [("VAE", "VAE")], (0, 400))
    shift = g.node("ModelSamplingSD3", [8.0], [("model", "MODEL")], [("MODEL", "MODEL")], (350, 0))
    sparse = g.node("DiTAccelSparseAttention", ["quality", "pisa", 0.5, 0.0, 2, "", "64"], [("model", "MODEL")],
                    [("MODEL", "MODEL")], (350, 150))
    positive = g.node("CLIPTextEncode", ["a corgi running along a beach at sunset, waves, cinematic"],
                      [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")], (350, 350))
    negative = g.node("CLIPTextEncode", ["blurry, static, low quality"], [("clip", "CLIP")],
                      [("CONDITIONING", "CONDITIONING")], (350, 550))
    latent = g.node("EmptyHunyuanLatentVideo", [832, 480, 33, 1], [], [("LATENT", "LATENT")], (350, 750))
    ks = sampler(g, 750, 0, "Wan with DiT Sparse Attention", steps=30, cfg=6.0)
    decode = g.node("VAEDecode", [], [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")], (1100, 0))
    # SaveImage writes the frames (core's animated savers are not in every supported ComfyUI's default set).
    save = g.node("SaveImage", ["dit-accel-wan"], [("images", "IMAGE")], [], (1350, 0))
    g.link(unet, 0, shift, "model")
    g.link(shift, 0, sparse, "model")
    g.link(sparse, 0, ks, "model")
    g.link(clip, 0, positive, "clip")
    g.link(clip, 0, negative, "clip")
    g.link(positive, 0, ks, "positive")
    g.link(negative, 0, ks, "negative")
    g.link(latent, 0, ks, "latent_image")
    g.link(ks, 0, decode, "samples")
    g.link(vae, 0, decode, "vae")
    g.link(decode, 0, save, "images")
    return g.to_json()


def reference_with_forecast(method: str):
    """Full compute beside DiT Forecast with one method on its balanced setting (4x on 20 steps)."""
    def build() -> dict:
        g = Graph()
        model = g.node("DiTAccelReferenceModelLoader", [], [], [("MODEL", "MODEL")], (0, 0))
        forecast = g.node("DiTAccelForecast", [method, "balanced", 5, 0.1, 1, 4, "model", 0.0, 1.0, 1, -1],
                          [("model", "MODEL")], [("MODEL", "MODEL")], (0, 300), f"DiT Forecast ({method})")
        inputs = _digit_inputs(g)
        _sample_and_preview(g, model, inputs, 400, 0, "full compute")
        _sample_and_preview(g, forecast, inputs, 400, 400, f"{method}, 4x")
        return g.to_json()
    return build


WORKFLOWS = {"reference_digits_with_and_without_acceleration.json": reference_with_and_without_acceleration,
             "flux_dev_block_cache.json": flux_dev_with_block_cache,
             "reference_digits_head_guidance.json": reference_with_head_guidance,
             "reference_digits_quantize_and_save.json": reference_quantize_and_save,
             "quantized_file_core_loader_lora.json": quantized_file_with_core_loader_and_lora,
             "wan_t2v_sparse_attention.json": wan_t2v_with_sparse_attention,
             **{f"reference_digits_forecast_{m.replace('-', '_')}.json": reference_with_forecast(m)
                for m in ("taylorseer", "spectrum", "cg-taylor", "spectrum-plan")}}

if __name__ == "__main__":
    for name, build in WORKFLOWS.items():
        (HERE / name).write_text(json.dumps(build(), indent=1) + "\n")
        print("wrote", HERE / name)
