"""The paper model of sequence parallelism: bytes on the wire against FLOPs per block and per step.

Used by `docs/multi_gpu.md` (`python -m dit_accel.accel.parallel.cost` prints its table) so that the expected speedup
of each shape is written down before a multi-GPU machine measures it. Shapes are those of the real-scale issue
(issue 25); text lengths and FFN widths are the families' defaults (Wan: 512 umt5 tokens, FFN 13,824 / 8,960; Flux and
HunyuanVideo: 512 / 256 text tokens, MLP ratio 4; Qwen-Image: ~128 text tokens, MLP ratio 4).

Ulysses moves q, k and v (sequence split -> head split) and the attention output (back) through all-to-alls: each
rank sends (P-1)/P of its shard of each, 4 · rows · L/P · width · bytes · (P-1)/P per block. Joint text tokens add an
all-gather of the text rows' output heads. Nothing else crosses the wire: the FFN, norms and modulation stay local.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    name: str
    width: int
    blocks: int
    heads: int
    image_tokens: int
    text_tokens: int
    rows: int                    # batch rows per model call (2 under CFG)
    linear_params_per_token: int  # weights a token multiplies per block (both streams / self + cross + FFN)
    joint_text: bool             # text tokens take part in the same attention call (Flux, Qwen, HunyuanVideo)

    def block_flops(self) -> float:
        """FLOPs of one block call (all rows): 2 per weight per token, 4·L²·width for QKᵀ and PV."""
        seq = self.image_tokens + (self.text_tokens if self.joint_text else 0)
        linear = 2 * self.linear_params_per_token * self.image_tokens
        attention = 4 * seq * seq * self.width
        if not self.joint_text:  # Wan: cross-attention of the image queries onto the text
            attention += 4 * self.image_tokens * self.text_tokens * self.width
        return self.rows * (linear + attention)

    def block_bytes_sent(self, ranks: int, bytes_per_value: int = 2) -> float:
        """Bytes one rank sends per block call under Ulysses over `ranks` ranks."""
        if ranks <= 1:
            return 0.0
        share = (ranks - 1) / ranks
        bytes_ = 4 * self.rows * self.image_tokens / ranks * self.width * bytes_per_value * share
        if self.joint_text:  # the text rows' output heads, gathered so every rank keeps the whole text stream
            bytes_ += self.rows * self.text_tokens * self.width / ranks * bytes_per_value * (ranks - 1)
        return bytes_


def _wan(name, width, blocks, heads, tokens, ffn):
    return Shape(name, width, blocks, heads, tokens, 512, 2, 4 * width * width + 2 * width * width + 2 * width * ffn,
                 False)


def _mmdit(name, width, blocks, heads, tokens, text, rows):
    # Double-stream / single-stream blocks both carry about 12·width² weights per token (qkv + out + 4x MLP).
    return Shape(name, width, blocks, heads, tokens, text, rows, 12 * width * width, True)


SHAPES = {s.name: s for s in (
    _wan("wan-14b-480p-81f", 5120, 40, 40, 21 * 30 * 52, 13824),
    _wan("wan-14b-720p-81f", 5120, 40, 40, 21 * 45 * 80, 13824),
    _wan("wan-1.3b-480p-81f", 1536, 30, 12, 21 * 30 * 52, 8960),
    _mmdit("flux-dev-1024", 3072, 19 + 38, 24, 4096, 512, 1),
    _mmdit("qwen-image-1328", 3072, 60, 24, 6889, 128, 2),
    _mmdit("hunyuan-video-720p-129f", 3072, 20 + 40, 24, 33 * 45 * 80, 256, 1),
)}


@dataclass(frozen=True)
class Interconnect:
    name: str
    bytes_per_s: float     # what one GPU's all-to-all achieves (not the link's peak)
    flops_per_s: float     # what one GPU achieves on the block's GEMMs and attention in bf16 (not its peak)


# Stated assumptions, to be replaced by measurements: PCIe 4 x16 peer traffic reaches ~20 GB/s per GPU (through the
# host when consumer cards lack P2P); NVLink 4 all-to-all ~300 GB/s per GPU of its 450 GB/s. Compute: ~100 TFLOP/s
# achieved on a 4090-class card (165 peak), ~500 on an H100/H200 (990 peak).
LINKS = (Interconnect("PCIe 4 (4090-class)", 20e9, 100e12), Interconnect("NVLink (H100-class)", 300e9, 500e12))


def modelled_step(shape: Shape, ranks: int, link: Interconnect) -> dict:
    """Per step (one model call of every block): compute and communication time per rank, and the speedup when the
    all-to-alls do not overlap compute (Ulysses's are on the critical path)."""
    compute_1 = shape.blocks * shape.block_flops() / link.flops_per_s
    compute_p = compute_1 / ranks
    comm = shape.blocks * shape.block_bytes_sent(ranks) / link.bytes_per_s
    return {"compute_s": compute_p, "comm_s": comm, "comm_share": comm / (compute_p + comm),
            "speedup": compute_1 / (compute_p + comm)}


LATENT_VALUES_PER_TOKEN = 64  # the model output per image token: 16 latent channels x a 2x2 patch (Wan, Flux, Hunyuan)


def modelled_step_cfg(shape: Shape, cfg_groups: int, sequence_ranks: int, link: Interconnect) -> dict | None:
    """Per step under CFG parallelism: each of `cfg_groups` groups runs rows / cfg_groups rows, split over
    `sequence_ranks` ranks by Ulysses; the rows' outputs are gathered once per call. None where the call has fewer
    rows than groups (guidance-distilled models at CFG 1: nothing to split)."""
    if shape.rows < cfg_groups:
        return None
    ranks = cfg_groups * sequence_ranks
    compute_1 = shape.blocks * shape.block_flops() / link.flops_per_s
    compute_p = compute_1 / ranks
    # The sequence axis moves this group's rows only; the gather moves every other group's output rows.
    comm = shape.blocks * shape.block_bytes_sent(sequence_ranks) / cfg_groups / link.bytes_per_s
    gather = (shape.rows / cfg_groups * (cfg_groups - 1) * shape.image_tokens / sequence_ranks
              * LATENT_VALUES_PER_TOKEN * 2)
    comm += gather / link.bytes_per_s
    return {"compute_s": compute_p, "comm_s": comm, "comm_share": comm / (compute_p + comm),
            "speedup": compute_1 / (compute_p + comm)}


def cfg_table(layouts=((2, 1), (2, 2), (2, 4))) -> str:
    """CFG x Ulysses layouts against Ulysses alone on as many ranks, for the shapes that batch cond and uncond."""
    rows = ["| shape | ranks | layout | link | comm ms / step | comm share | modelled speedup | Ulysses alone |",
            "|---|---|---|---|---|---|---|---|"]
    for shape in SHAPES.values():
        for cfg_groups, sequence_ranks in layouts:
            for link in LINKS:
                m = modelled_step_cfg(shape, cfg_groups, sequence_ranks, link)
                if m is None:
                    continue
                alone = modelled_step(shape, cfg_groups * sequence_ranks, link)
                rows.append(f"| {shape.name} | {cfg_groups * sequence_ranks} | {cfg_groups} cfg x {sequence_ranks} "
                            f"ulysses | {link.name} | {m['comm_s'] * 1e3:,.1f} | {m['comm_share']:.0%} | "
                            f"{m['speedup']:.2f}x | {alone['speedup']:.2f}x |")
    return "\n".join(rows)


def table(ranks=(2, 4, 8)) -> str:
    rows = ["| shape | ranks | MB sent / block / rank | block GFLOP / rank | link | compute ms / step | "
            "comm ms / step | comm share | modelled speedup |", "|---|---|---|---|---|---|---|---|---|"]
    for shape in SHAPES.values():
        for p in ranks:
            for link in LINKS:
                m = modelled_step(shape, p, link)
                rows.append(f"| {shape.name} | {p} | {shape.block_bytes_sent(p) / 1e6:,.0f} | "
                            f"{shape.block_flops() / p / 1e9:,.0f} | {link.name} | {m['compute_s'] * 1e3:,.0f} | "
                            f"{m['comm_s'] * 1e3:,.0f} | {m['comm_share']:.0%} | {m['speedup']:.2f}x |")
    return "\n".join(rows)


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(table())
    print()
    print(cfg_table())
