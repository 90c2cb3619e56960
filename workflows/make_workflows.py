"""Regenerate the example workflows (ComfyUI's UI format): `python workflows/make_workflows.py`.

Kept as code so a renamed input or a new node updates every workflow at once. ComfyUI lists the files of this folder
under Templates -> Extensions -> <the pack's folder>: the template's title is the file name (so the names are
written for people) and a JPEG of the same name beside it is its thumbnail (tests/browser takes them).
tests/comfyui/test_workflows.py checks the files against each ComfyUI snapshot's node registry and against this
script's output; tests/browser loads and runs them in ComfyUI's own front end.

Each workflow declares in `extra.dit_accel` what running it needs, so the browser test finds new workflows by
itself: `models` is "reference" when the bundled reference model is all it needs (the test runs it to completion)
or "yours" when it needs model files users download (the test checks that only those are missing); `log` lists
regular expressions the server log must match once it ran (the pack's summary line saying what it skipped).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The front end's node geometry (ComfyUI frontend 1.49, LiteGraph classic canvas): it draws the title bar above a
# node's `pos` and grows a loaded node to its computed size, so the layout reserves at least that much. Text widths
# are estimated on the generous side of the Inter font it uses (14 px titles, 12 px slot labels).
TITLE_HEIGHT = 30
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24              # 20 px widget + 4 px spacing
WIDGETS_PADDING = 8
NODE_PADDING = 6
MIN_WIDTH, MIN_WIDGET_WIDTH = 180, 270  # 140 px cuts titles like "VAE Decode"; 210 + 60 px for widget values
TITLE_CHAR, LABEL_CHAR = 9.0, 7.5
COLUMN_GAP, ROW_GAP = 60, 40
PREVIEW_SIZE = (340, 220)       # room for a preview's digits side by side after a run
TEXT_SIZE = (400, 200)          # a multi-line prompt box at the front end's default size

# What running a workflow needs (see the module docstring).
REFERENCE_ONLY, USER_MODELS = "reference", "yours"
# The pack's summary line (accel/host.py logs "dit-accel <patch line>"); `done` < `of` shows work was skipped.
BLOCK_CACHE_LOG = r"dit-accel blockcache .*: computed (?P<done>\d+)/(?P<of>\d+) block evaluations"


def node_size(title: str, inputs, outputs, n_widgets: int) -> list[int]:
    """The size the front end computes for a node (LGraphNode.computeSize), rounded up."""
    rows = max(len(inputs), len(outputs), 1)
    height = NODE_PADDING + rows * SLOT_HEIGHT + (n_widgets * WIDGET_HEIGHT + WIDGETS_PADDING if n_widgets else 0)
    labels = (max((len(n) for n, _ in inputs), default=0) + max((len(n) for n, _ in outputs), default=0))
    width = max(MIN_WIDGET_WIDTH if n_widgets else MIN_WIDTH, TITLE_HEIGHT * 1.33 + TITLE_CHAR * len(title),
                LABEL_CHAR * labels + 2 * SLOT_HEIGHT + 5)
    return [int(math.ceil(width / 10) * 10), height]


class Graph:
    """A workflow in ComfyUI's UI format. Nodes sit in grid cells (column, row); a cell holding several nodes
    stacks them. `to_json` places columns and rows so that no node, title bar included, overlaps another."""

    def __init__(self, models: str, log: tuple[str, ...] = ()):
        self.nodes, self.links, self.cells = [], [], {}
        self.extra = {"dit_accel": {"models": models, "log": list(log)}}

    def node(self, type_, widgets=(), inputs=(), outputs=(), cell=(0, 0), title=None, size=None, display=None):
        """`display` is the front end's title for the type (its display name), used to size an untitled node."""
        nid = len(self.nodes) + 1
        computed = node_size(title or display or type_, inputs, outputs, len(widgets))
        node = {"id": nid, "type": type_, "pos": [0, 0],
                "size": [max(a, b) for a, b in zip(computed, size)] if size else computed,
                "flags": {}, "order": nid - 1, "mode": 0,
                "inputs": [{"name": n, "type": t, "link": None} for n, t in inputs],
                "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
                "properties": {"Node name for S&R": type_}, "widgets_values": list(widgets)}
        if title:
            node["title"] = title
        self.nodes.append(node)
        self.cells.setdefault(tuple(cell), []).append(node)
        return nid

    def link(self, src, src_slot, dst, dst_input):
        lid = len(self.links) + 1
        src_node, dst_node = self.nodes[src - 1], self.nodes[dst - 1]
        out = src_node["outputs"][src_slot]
        slot = next(i for i, inp in enumerate(dst_node["inputs"]) if inp["name"] == dst_input)
        out["links"].append(lid)
        dst_node["inputs"][slot]["link"] = lid
        self.links.append([lid, src, src_slot, dst, slot, out["type"]])

    def _layout(self):
        n_cols = 1 + max(c for c, _ in self.cells)
        n_rows = 1 + max(r for _, r in self.cells)
        widths = [max((n["size"][0] for (c, _), ns in self.cells.items() if c == col for n in ns), default=0)
                  for col in range(n_cols)]
        heights = [max((sum(n["size"][1] + TITLE_HEIGHT for n in ns) + ROW_GAP * (len(ns) - 1)
                        for (_, r), ns in self.cells.items() if r == row), default=0) for row in range(n_rows)]
        for (col, row), stacked in self.cells.items():
            x = sum(widths[:col]) + COLUMN_GAP * col
            y = sum(heights[:row]) + ROW_GAP * row
            for node in stacked:
                node["pos"] = [x, y + TITLE_HEIGHT]
                y += TITLE_HEIGHT + node["size"][1] + ROW_GAP

    def to_json(self) -> dict:
        self._layout()
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": self.extra, "version": 0.4}


def sampler(g, cell, title, steps=20, cfg=4.0):
    return g.node("KSampler", [42, "fixed", steps, cfg, "euler", "simple", 1.0],
                  [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                   ("latent_image", "LATENT")], [("LATENT", "LATENT")], cell, title)


# Reference-model workflows: two branches side by side, row 0 plain and row 1 with the pack's node; the shared
# prompt and latent below them in column 0.
PLAIN = "plain"


def _reference_graph(log: tuple[str, ...] = ()):
    g = Graph(REFERENCE_ONLY, log)
    model = g.node("DiTAccelReferenceModelLoader", [], [], [("MODEL", "MODEL")], (0, 0),
                   display="DiT Reference Model (digits)")
    return g, model


def _digit_inputs(g, cell=(0, 2)):
    digit = g.node("DiTAccelDigitLabel", ["3"], [], [("CONDITIONING", "CONDITIONING")], cell, "prompt: digit 3")
    negative = g.node("DiTAccelDigitLabel", ["unconditional"], [], [("CONDITIONING", "CONDITIONING")], cell,
                      "negative: unconditional")
    latent = g.node("DiTAccelDigitEmptyLatent", [128, 2], [], [("LATENT", "LATENT")], cell,
                    display="DiT Digit Empty Latent")
    return digit, negative, latent


def _sample_and_preview(g, model, inputs, row, branch):
    """KSampler -> decode -> preview in columns 1-3 of `row`, each titled with the branch it belongs to."""
    digit, negative, latent = inputs
    ks = sampler(g, (1, row), f"KSampler: {branch}")
    g.link(model, 0, ks, "model")
    g.link(digit, 0, ks, "positive")
    g.link(negative, 0, ks, "negative")
    g.link(latent, 0, ks, "latent_image")
    dec = g.node("DiTAccelDigitDecode", [], [("samples", "LATENT")], [("IMAGE", "IMAGE")], (2, row),
                 display="DiT Digit Decode")
    g.link(ks, 0, dec, "samples")
    prev = g.node("PreviewImage", [], [("images", "IMAGE")], [], (3, row), branch, PREVIEW_SIZE)
    g.link(dec, 0, prev, "images")


def _plain_and_accelerated(type_, widgets, title, branch, log) -> dict:
    """The reference model sampled plain and through one pack node (`type_` with `widgets`), side by side."""
    g, model = _reference_graph(log)
    patched = g.node(type_, widgets, [("model", "MODEL")], [("MODEL", "MODEL")], (0, 1), title)
    g.link(model, 0, patched, "model")
    inputs = _digit_inputs(g)
    _sample_and_preview(g, model, inputs, 0, PLAIN)
    _sample_and_preview(g, patched, inputs, 1, branch)
    return g.to_json()


def reference_with_and_without_acceleration() -> dict:
    return _plain_and_accelerated(
        "DiTAccelBlockCache", ["balanced", 1.0, "block", "stack", 2, 0.0, 1.0, 1, 1, 3, 2, -1.0],
        "DiT Block Cache (balanced)", "accelerated: DiT Block Cache balanced",
        (BLOCK_CACHE_LOG,))


def reference_with_head_guidance() -> dict:
    """CFG alone beside CFG + DiT Head Guidance on the shipped HeadHunter preset (with its own settings)."""
    return _plain_and_accelerated(
        "DiTAccelHeadGuidance", [2.0, 1.0, "reference-digits", 0.0, 0.6, True, -1.0],
        "DiT Head Guidance (reference-digits preset)", "guided: CFG + DiT Head Guidance",
        (r"dit-accel softpag \(heads .*\): perturbed branch on \d+/\d+ steps",))


def reference_with_forecast(method: str):
    """Full compute beside DiT Forecast with one method on its balanced setting (4x on 20 steps)."""
    def build() -> dict:
        return _plain_and_accelerated(
            "DiTAccelForecast", [method, "balanced", 5, 0.1, 1, 4, "model", 0.0, 1.0, 1, -1, -1.0],
            f"DiT Forecast ({method}, balanced)", f"accelerated: DiT Forecast {method} balanced",
            (rf"dit-accel {method} .*: ran (?P<done>\d+)/(?P<of>\d+) model calls",))
    return build


def reference_with_multi_gpu() -> dict:
    """One process beside DiT Multi-GPU over 2 devices: GPUs where there are two, else 2 CPU processes (gloo), which
    is how the browser check runs it; the two branches give the same digits."""
    return _plain_and_accelerated(
        "DiTAccelMultiGPU", [2, "auto", "", "auto", 60.0, 1], "DiT Multi-GPU (2 devices)",
        "split over 2 devices: DiT Multi-GPU",
        (r"dit-accel sequence_parallel: 2 ranks, image tokens split .*; attention calls: \d+ (ulysses|ring)",))


def reference_quantize_and_save() -> dict:
    """Quantize the reference model to 4-bit weights on the uniform grid (where TLQ's twin-log codebook does not
    win), calibrated (GPTQ) on the same prompt and latent over 4 steps, sample with it, and save it."""
    g, model = _reference_graph((r"DiT Quantize: uniform-w4", r"DiT Save Quantized Model: wrote "))
    quant = g.node("DiTAccelQuantize", ["uniform-w4", 64, 4, 4.0],
                   [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                    ("latent", "LATENT")], [("MODEL", "MODEL")], (0, 1), "DiT Quantize (4-bit, calibrated)")
    save = g.node("DiTAccelSaveQuantized", ["diffusion_models/dit_accel_reference_w4"], [("model", "MODEL")], [],
                  (1, 1), display="DiT Save Quantized Model")
    g.link(model, 0, quant, "model")
    g.link(quant, 0, save, "model")
    inputs = _digit_inputs(g)
    for source, name in zip(inputs, ("positive", "negative", "latent")):
        g.link(source, 0, quant, name)
    _sample_and_preview(g, quant, inputs, 0, "quantized: W4A16, calibrated")
    return g.to_json()


def quantized_file_with_core_loader_and_lora() -> dict:
    """Load a quantized (4-bit codebook) file with ComfyUI's own Load Diffusion Model, sample plain and with a LoRA
    on top. The file is the one the quantize-and-save workflow writes; the LoRA is the user's."""
    g = Graph(USER_MODELS)
    unet = g.node("UNETLoader", ["dit_accel_reference_w4.safetensors", "default"], [], [("MODEL", "MODEL")],
                  (0, 0), "Load the quantized file (core loader)")
    lora = g.node("LoraLoaderModelOnly", ["your_lora.safetensors", 1.0], [("model", "MODEL")],
                  [("MODEL", "MODEL")], (0, 1), "your LoRA on the quantized model")
    g.link(unet, 0, lora, "model")
    inputs = _digit_inputs(g)
    _sample_and_preview(g, unet, inputs, 0, "quantized file")
    _sample_and_preview(g, lora, inputs, 1, "quantized file + LoRA")
    return g.to_json()


def flux_dev_with_block_cache() -> dict:
    """Flux.1-dev text-to-image with the block cache. Flux has no measured preset yet, so `custom` settings: the
    reference model's balanced ones (block gate, at most 2 forecast steps in a row, second-order forecast)."""
    g = Graph(USER_MODELS, (BLOCK_CACHE_LOG,))
    unet = g.node("UNETLoader", ["flux1-dev.safetensors", "default"], [], [("MODEL", "MODEL")], (0, 0),
                  display="Load Diffusion Model")
    clip = g.node("DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"], [],
                  [("CLIP", "CLIP")], (0, 1), display="Load CLIP (Dual)")
    vae = g.node("VAELoader", ["ae.safetensors"], [], [("VAE", "VAE")], (0, 1), display="Load VAE")
    cache = g.node("DiTAccelBlockCache", ["custom", 1.0, "block", "stack", 2, 0.0, 1.0, 1, 1, 2, 2, -1.0],
                   [("model", "MODEL")], [("MODEL", "MODEL")], (1, 0), "DiT Block Cache (custom: balanced settings)")
    text = g.node("CLIPTextEncode", ["a red fox reading a newspaper in a cafe, film photo"],
                  [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")], (1, 1), "prompt", TEXT_SIZE)
    guidance = g.node("FluxGuidance", [3.5], [("conditioning", "CONDITIONING")],
                      [("CONDITIONING", "CONDITIONING")], (2, 1), display="FluxGuidance")
    negative = g.node("ConditioningZeroOut", [], [("conditioning", "CONDITIONING")],
                      [("CONDITIONING", "CONDITIONING")], (2, 1), display="Conditioning Zero Out")
    latent = g.node("EmptySD3LatentImage", [1024, 1024, 1], [], [("LATENT", "LATENT")], (1, 1),
                    display="EmptySD3LatentImage")
    ks = sampler(g, (3, 0), "KSampler: accelerated: DiT Block Cache", steps=20, cfg=1.0)
    decode = g.node("VAEDecode", [], [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")], (4, 0),
                    display="VAE Decode")
    save = g.node("SaveImage", ["dit-accel-flux"], [("images", "IMAGE")], [], (5, 0), display="Save Image",
                  size=PREVIEW_SIZE)
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


def wan_t2v_with_sparse_attention() -> dict:
    """Wan 2.1 text-to-video (1.3B, 33 frames at 832x480) with the DiT Sparse Attention node on its quality preset
    (PISA at 50 % block sparsity, blocks of 64, two dense warm-up steps)."""
    g = Graph(USER_MODELS)
    unet = g.node("UNETLoader", ["wan2.1_t2v_1.3B_fp16.safetensors", "default"], [], [("MODEL", "MODEL")], (0, 0),
                  display="Load Diffusion Model")
    clip = g.node("CLIPLoader", ["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan", "default"], [],
                  [("CLIP", "CLIP")], (0, 1), display="Load CLIP")
    vae = g.node("VAELoader", ["wan_2.1_vae.safetensors"], [], [("VAE", "VAE")], (0, 1), display="Load VAE")
    shift = g.node("ModelSamplingSD3", [8.0], [("model", "MODEL")], [("MODEL", "MODEL")], (1, 0),
                   display="ModelSamplingSD3")
    sparse = g.node("DiTAccelSparseAttention", ["quality", "pisa", 0.5, 0.0, 2, "", "64"], [("model", "MODEL")],
                    [("MODEL", "MODEL")], (2, 0), "DiT Sparse Attention (quality)")
    positive = g.node("CLIPTextEncode", ["a corgi running along a beach at sunset, waves, cinematic"],
                      [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")], (1, 1), "prompt", TEXT_SIZE)
    negative = g.node("CLIPTextEncode", ["blurry, static, low quality"], [("clip", "CLIP")],
                      [("CONDITIONING", "CONDITIONING")], (1, 1), "negative prompt", TEXT_SIZE)
    latent = g.node("EmptyHunyuanLatentVideo", [832, 480, 33, 1], [], [("LATENT", "LATENT")], (2, 1),
                    display="Empty HunyuanVideo 1.0 Latent")
    ks = sampler(g, (3, 0), "KSampler: accelerated: DiT Sparse Attention", steps=30, cfg=6.0)
    decode = g.node("VAEDecode", [], [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")], (4, 0),
                    display="VAE Decode")
    # SaveImage writes the frames (core's animated savers are not in every supported ComfyUI's default set).
    save = g.node("SaveImage", ["dit-accel-wan"], [("images", "IMAGE")], [], (5, 0), display="Save Image",
                  size=PREVIEW_SIZE)
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


FORECAST_TITLES = {"taylorseer": "TaylorSeer", "spectrum": "Spectrum", "cg-taylor": "CG-Taylor",
                   "spectrum-plan": "spectrum-plan"}

# File name (without .json) -> builder. The name is the template's title in ComfyUI's template browser.
WORKFLOWS = {"Reference digits - DiT Block Cache vs plain": reference_with_and_without_acceleration,
             "Reference digits - DiT Head Guidance vs CFG alone": reference_with_head_guidance,
             **{f"Reference digits - DiT Forecast {title} vs plain": reference_with_forecast(method)
                for method, title in FORECAST_TITLES.items()},
             "Reference digits - DiT Multi-GPU (2 devices) vs one": reference_with_multi_gpu,
             "Reference digits - quantize to 4-bit and save": reference_quantize_and_save,
             "Quantized file in the core loader with a LoRA": quantized_file_with_core_loader_and_lora,
             "Flux.1-dev - DiT Block Cache": flux_dev_with_block_cache,
             "Wan 2.1 text-to-video - DiT Sparse Attention": wan_t2v_with_sparse_attention}


def render(build) -> str:
    return json.dumps(build(), indent=1) + "\n"


if __name__ == "__main__":
    for name, build in WORKFLOWS.items():
        (HERE / f"{name}.json").write_text(render(build))
        print("wrote", HERE / f"{name}.json")
