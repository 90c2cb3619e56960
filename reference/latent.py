"""The reference model's fixed latent codec: 128×128 grey digits <-> 16×1×32×32 Wan 2.1-format latents.

Encoding is a pixel-unshuffle by 4 (16 channels, as Wan's latent format requires) followed by Wan 2.1's latent
de-normalisation, so that after ComfyUI's `process_in` the model sees pixel values in [-1, 1]. Decoding undoes
both: it is exact, has no weights, and works on latents that come out of ComfyUI's sampler (which applies
`process_out` on the way out).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IMAGE_SIZE = 128
UNSHUFFLE = 4
LATENT_CHANNELS = 16

# Wan 2.1 VAE latent statistics, the normalisation ComfyUI's Wan21 latent format applies (process_in / process_out).
WAN21_LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                     0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


def _stats(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, LATENT_CHANNELS, 1, 1, 1)
    mean = torch.tensor(WAN21_LATENT_MEAN, device=like.device, dtype=like.dtype).view(shape)
    std = torch.tensor(WAN21_LATENT_STD, device=like.device, dtype=like.dtype).view(shape)
    return mean, std


def process_in(raw: torch.Tensor) -> torch.Tensor:
    """ComfyUI's Wan21 `process_in`: raw latent -> the space the model works in."""
    mean, std = _stats(raw)
    return (raw - mean) / std


def process_out(model_space: torch.Tensor) -> torch.Tensor:
    """ComfyUI's Wan21 `process_out`: model space -> raw latent."""
    mean, std = _stats(model_space)
    return model_space * std + mean


def images_to_model_latents(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, 128, 128) in [0, 1] -> (B, 16, 1, 32, 32) model-space latents in [-1, 1]."""
    return F.pixel_unshuffle(images * 2 - 1, UNSHUFFLE).unsqueeze(2)


def model_latents_to_images(latents: torch.Tensor) -> torch.Tensor:
    """(B, 16, 1, h, w) model-space latents -> (B, 1, 4h, 4w) images in [0, 1]."""
    return (F.pixel_shuffle(latents[:, :, 0].float(), UNSHUFFLE) * 0.5 + 0.5).clamp(0, 1)


def encode(images: torch.Tensor) -> torch.Tensor:
    """Images -> raw latents (what a LATENT holds in a ComfyUI graph)."""
    return process_out(images_to_model_latents(images))


def decode(raw_latents: torch.Tensor) -> torch.Tensor:
    """Raw latents (a ComfyUI LATENT's `samples`) -> images in [0, 1]."""
    if raw_latents.ndim == 4:  # a single-frame latent without its time axis
        raw_latents = raw_latents.unsqueeze(2)
    return model_latents_to_images(process_in(raw_latents.float()))
