"""Blocks with the layer sizes of the families we have no pure-torch copy of (Flux, HunyuanVideo, Qwen-Image), for
the unpatched forward's activation memory under FakeTensorMode. Wan uses our reference implementation itself.

A dual-stream block (Flux / HunyuanVideo double block, Qwen-Image block): per stream, modulation, QKV, joint
attention over [txt | img], output projection and an MLP of `ffn` hidden units. A single-stream block (Flux /
HunyuanVideo single block): one linear to QKV + MLP, attention over the joint sequence, one linear back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _attention(q, k, v, heads):
    b, l, _ = q.shape
    q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, l, -1)


class _Stream(nn.Module):
    def __init__(self, width: int, ffn: int):
        super().__init__()
        self.mod = nn.Linear(width, 6 * width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, ffn), nn.GELU(approximate="tanh"), nn.Linear(ffn, width))
        self.norm = nn.LayerNorm(width, elementwise_affine=False)


class DualStreamBlock(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.img, self.txt = _Stream(width, ffn), _Stream(width, ffn)

    def forward(self, img, txt, vec):
        parts, mods = [], []
        for x, s in ((txt, self.txt), (img, self.img)):
            m = s.mod(F.silu(vec)).unsqueeze(1).chunk(6, dim=-1)
            mods.append(m)
            parts.append(s.qkv(s.norm(x) * (1 + m[1]) + m[0]).chunk(3, dim=-1))
        q, k, v = (torch.cat([p[i] for p in parts], dim=1) for i in range(3))
        attn = _attention(q, k, v, self.heads)
        t_attn, i_attn = attn[:, :txt.shape[1]], attn[:, txt.shape[1]:]
        out = []
        for x, a, s, m in ((txt, t_attn, self.txt, mods[0]), (img, i_attn, self.img, mods[1])):
            x = x + m[2] * s.proj(a)
            out.append(x + m[5] * s.mlp(s.norm(x) * (1 + m[4]) + m[3]))
        return out[1], out[0]


class SingleStreamBlock(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int):
        super().__init__()
        self.heads, self.width = heads, width
        self.mod = nn.Linear(width, 3 * width)
        self.linear1 = nn.Linear(width, 3 * width + ffn)
        self.linear2 = nn.Linear(width + ffn, width)
        self.norm = nn.LayerNorm(width, elementwise_affine=False)

    def forward(self, x, vec):
        shift, scale, gate = self.mod(F.silu(vec)).unsqueeze(1).chunk(3, dim=-1)
        qkv, mlp = self.linear1(self.norm(x) * (1 + scale) + shift).split([3 * self.width, mlp_width(self)], dim=-1)
        q, k, v = qkv.chunk(3, dim=-1)
        out = self.linear2(torch.cat([_attention(q, k, v, self.heads), F.gelu(mlp, approximate="tanh")], dim=-1))
        return x + gate * out


def mlp_width(block: SingleStreamBlock) -> int:
    return block.linear1.out_features - 3 * block.width


class Flux(nn.Module):
    """A Flux-shaped model with random weights for the GPU check: patchified latent and text streams through
    `double_blocks` then `single_blocks` on the joint sequence, called through ComfyUI's `patches_replace["dit"]`
    contract (the class name is what the Flux adapter recognises). Not Flux's numerics: its shapes and its cost."""

    def __init__(self, width: int, heads: int, ffn: int, double: int, single: int, channels: int = 16,
                 text_dim: int = 4096):
        super().__init__()
        self.width = width
        self.img_in = nn.Linear(channels * 4, width)
        self.txt_in = nn.Linear(text_dim, width)
        self.time_in = nn.Linear(256, width)
        self.double_blocks = nn.ModuleList(DualStreamBlock(width, heads, ffn) for _ in range(double))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(width, heads, ffn) for _ in range(single))
        self.final = nn.Linear(width, channels * 4)

    def forward(self, x, timestep, context, transformer_options=None):
        to = transformer_options or {}
        b, c, f, h, w = x.shape
        img = self.img_in(x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * 4))
        txt = self.txt_in(context.to(img.dtype))
        freqs = timestep.float()[:, None] * torch.arange(128, device=x.device) / 128
        vec = self.time_in(torch.cat([freqs.sin(), freqs.cos()], dim=1).to(img.dtype))
        replace = to.get("patches_replace", {}).get("dit", {})
        for i, block in enumerate(self.double_blocks):
            def original(args, block=block):
                out_img, out_txt = block(args["img"], args["txt"], args["vec"])
                return {"img": out_img, "txt": out_txt}
            args = {"img": img, "txt": txt, "vec": vec, "pe": None, "attn_mask": None, "transformer_options": to}
            out = replace[("double_block", i)](args, {"original_block": original}) \
                if ("double_block", i) in replace else original(args)
            img, txt = out["img"], out["txt"]
        joint = torch.cat([txt, img], dim=1)
        for i, block in enumerate(self.single_blocks):
            def original(args, block=block):
                return {"img": block(args["img"], args["vec"])}
            args = {"img": joint, "vec": vec, "pe": None, "attn_mask": None, "transformer_options": to}
            joint = (replace[("single_block", i)](args, {"original_block": original})
                     if ("single_block", i) in replace else original(args))["img"]
        out = self.final(joint[:, txt.shape[1]:])
        out = out.reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, f, h, w)
        return out.to(x.dtype)
