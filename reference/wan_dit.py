"""Pure-torch Wan 2.1 (t2v) diffusion transformer, parameter-for-parameter compatible with ComfyUI's `WanModel`.

Why our own copy: the demo, the bench and CI must run without ComfyUI, and ComfyUI's fused RoPE op has no autograd,
so training needs this implementation anyway. `tests/comfyui/test_reference_matches_comfy.py` proves both give the
same output on the same weights (checked against ComfyUI 0.8.0 and 0.33.0).

The forward honours the same `transformer_options` contract as ComfyUI's Wan forward, so the accel core's Wan
adapter drives both the same way:
  * `patches_replace["dit"][("double_block", i)](args, {"original_block": fn})` replaces block i,
  * `block_index` / `block_type` / `total_blocks` are written before each block,
  * every attention call goes through `optimized_attention_override(func, q, k, v, heads=, transformer_options=)`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class WanConfig:
    """What ComfyUI's Wan 2.1 detector reads from the weights (width, depth, FFN size, channels) plus the fixed rest."""

    dim: int = 256
    ffn_dim: int = 1024
    num_layers: int = 8
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096  # ComfyUI's detector does not read it from the weights: the Wan default must be kept
    freq_dim: int = 256
    eps: float = 1e-6
    patch_size: tuple[int, int, int] = (1, 2, 2)

    @property
    def num_heads(self) -> int:
        return self.dim // 128  # ComfyUI's rule for Wan 2.1

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)


def sdpa_attention(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                   **kwargs):
    """The plain attention backend: ComfyUI's backend signature, (B, L, H*D) in and out unless told otherwise."""
    if skip_reshape:
        b, _, _, dim_head = q.shape
    else:
        b, _, inner = q.shape
        dim_head = inner // heads
        q, k, v = (t.view(b, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).reshape(b, -1, heads * dim_head)


def attention(q, k, v, heads, transformer_options: dict):
    """Call the attention backend through the override slot, exactly as ComfyUI's `wrap_attn` does."""
    override = transformer_options.get("optimized_attention_override")
    if override is not None:
        return override(sdpa_attention, q, k, v, heads=heads, transformer_options=transformer_options,
                        _inside_attn_wrapper=True)
    return sdpa_attention(q, k, v, heads=heads)


def sinusoidal_embedding_1d(dim: int, position: torch.Tensor) -> torch.Tensor:
    half = dim // 2
    position = position.float()
    sinusoid = torch.outer(position, torch.pow(10000, -torch.arange(half).to(position).div(half)))
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)


def rope_1d(pos: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """Rotation matrices (..., n, dim/2, 2, 2) for positions `pos`, as ComfyUI's flux `rope`."""
    scale = torch.linspace(0, (dim - 2) / dim, steps=dim // 2, dtype=torch.float64, device=pos.device)
    omega = 1.0 / (theta ** scale)
    out = torch.einsum("...n,d->...nd", pos.to(torch.float32), omega)
    out = torch.stack([torch.cos(out), -torch.sin(out), torch.sin(out), torch.cos(out)], dim=-1)
    return out.reshape(*out.shape[:-1], 2, 2).float()


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    x_ = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    out = freqs[..., 0] * x_[..., 0] + freqs[..., 1] * x_[..., 1]
    return out.reshape(*x.shape).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def forward(self, x, freqs, transformer_options):
        b, s = x.shape[:2]
        n, d = self.num_heads, self.head_dim
        q = apply_rope(self.norm_q(self.q(x)).view(b, s, n, d), freqs)
        k = apply_rope(self.norm_k(self.k(x)).view(b, s, n, d), freqs)
        out = attention(q.view(b, s, n * d), k.view(b, s, n * d), self.v(x), n, transformer_options)
        return self.o(out)


class CrossAttention(SelfAttention):
    def forward(self, x, context, transformer_options):
        q = self.norm_q(self.q(x))
        k = self.norm_k(self.k(context))
        out = attention(q, k, self.v(context), self.num_heads, transformer_options)
        return self.o(out)


class WanBlock(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        dim = cfg.dim
        self.norm1 = nn.LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.eps)
        self.norm3 = nn.LayerNorm(dim, cfg.eps, elementwise_affine=True)  # Wan 2.1's cross_attn_norm
        self.cross_attn = CrossAttention(dim, cfg.num_heads, cfg.eps)
        self.norm2 = nn.LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim ** 0.5)

    def forward(self, x, e, freqs, context, transformer_options):
        # e: (B, 1, 6, dim) time projection; six (B, 1, dim) shift/scale/gate terms after adding the block's own table.
        e = (self.modulation.to(x.dtype).unsqueeze(0) + e).unbind(2)
        y = self.self_attn(torch.addcmul(e[0], self.norm1(x), 1 + e[1]), freqs, transformer_options)
        x = torch.addcmul(x, y, e[2])
        x = x + self.cross_attn(self.norm3(x), context, transformer_options)
        y = self.ffn(torch.addcmul(e[3], self.norm2(x), 1 + e[4]))
        return torch.addcmul(x, y, e[5])


class Head(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim ** 0.5)

    def forward(self, x, e):
        e = (self.modulation.to(x.dtype).unsqueeze(0) + e.unsqueeze(2)).unbind(2)
        return self.head(torch.addcmul(e[0], self.norm(x), 1 + e[1]))


class WanDiT(nn.Module):
    """Wan 2.1 t2v backbone. `forward(x (B,C,T,H,W), timestep (B,), context (B,L,text_dim), transformer_options)`."""

    def __init__(self, cfg: WanConfig = WanConfig()):
        super().__init__()
        self.cfg = cfg
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(WanBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        self._init_weights()

    def _init_weights(self):
        # Wan's own init: xavier linears, zero biases, small embeddings, zero output head.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        for m in list(self.text_embedding) + list(self.time_embedding):
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.head.head.weight)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def rope_freqs(self, t: int, h: int, w: int, device) -> torch.Tensor:
        p = self.cfg.patch_size
        d = self.cfg.head_dim
        axes = [d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)]
        sizes = [(t + p[0] // 2) // p[0], (h + p[1] // 2) // p[1], (w + p[2] // 2) // p[2]]
        grid = torch.meshgrid(*(torch.arange(n, dtype=torch.float32, device=device) for n in sizes), indexing="ij")
        ids = torch.stack(grid, dim=-1).reshape(1, -1, 3)
        freqs = torch.cat([rope_1d(ids[..., i], axes[i], 10000.0) for i in range(3)], dim=-3)
        return freqs.unsqueeze(2)  # (1, L, 1, d/2, 2, 2): broadcast over heads

    def forward(self, x, timestep, context, transformer_options: dict | None = None):
        to = {} if transformer_options is None else transformer_options
        b, _, t, h, w = x.shape
        pt, ph, pw = self.cfg.patch_size
        x = F.pad(x, (0, (-w) % pw, 0, (-h) % ph, 0, (-t) % pt))
        freqs = self.rope_freqs(t, h, w, x.device)

        tokens = self.patch_embedding(x.float()).to(x.dtype)
        grid = tokens.shape[2:]
        tokens = tokens.flatten(2).transpose(1, 2)
        e = self.time_embedding(sinusoidal_embedding_1d(self.cfg.freq_dim, timestep.flatten()).to(x.dtype))
        e = e.reshape(timestep.shape[0], -1, e.shape[-1])
        e0 = self.time_projection(e).unflatten(2, (6, self.cfg.dim))
        context = self.text_embedding(context)

        replace = to.get("patches_replace", {}).get("dit", {})
        to["total_blocks"] = len(self.blocks)
        to["block_type"] = "double"
        for i, block in enumerate(self.blocks):
            to["block_index"] = i
            if ("double_block", i) in replace:
                def original_block(args, block=block):
                    return {"img": block(args["img"], args["vec"], args["pe"], args["txt"], args["transformer_options"])}
                out = replace[("double_block", i)](
                    {"img": tokens, "txt": context, "vec": e0, "pe": freqs, "transformer_options": to},
                    {"original_block": original_block})
                tokens = out["img"]
            else:
                tokens = block(tokens, e0, freqs, context, to)

        out = self.head(tokens, e)
        return self.unpatchify(out, grid)[:, :, :t, :h, :w]

    def unpatchify(self, x, grid):
        c = self.cfg.out_dim
        b = x.shape[0]
        u = x[:, :math.prod(grid)].view(b, *grid, *self.cfg.patch_size, c)
        u = torch.einsum("bfhwpqrc->bcfphqwr", u)
        return u.reshape(b, c, *[g * p for g, p in zip(grid, self.cfg.patch_size)])
