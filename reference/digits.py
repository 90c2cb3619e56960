"""Handwritten digits from scikit-learn (shipped inside the package, no download), upscaled to the model's size.

A fixed split keeps the held-out digits (for the Fréchet distance and the classifier's accuracy) out of training.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .latent import IMAGE_SIZE

NUM_CLASSES = 10
SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.2


def load_digits_split() -> dict[str, torch.Tensor]:
    """{"train_images", "train_labels", "test_images", "test_labels"}; images (N, 1, 8, 8) in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - the message is the point
        raise ImportError("the digits data comes from scikit-learn: pip install scikit-learn "
                          "(or install dit-accel with the [test] extra)") from err
    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(data.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = int(len(labels) * HELD_OUT_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return {"train_images": images[train], "train_labels": labels[train],
            "test_images": images[test], "test_labels": labels[test]}


def upscale(images8: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    return F.interpolate(images8, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def augment(images: torch.Tensor, generator: torch.Generator | None = None, strength: float = 1.0) -> torch.Tensor:
    """Small random rotation, scale and shift, so a few hundred digits per class look like more."""
    b = images.shape[0]
    rand = lambda: torch.rand(b, generator=generator) * 2 - 1  # noqa: E731 - uniform in [-1, 1]
    angle = rand() * math.radians(10) * strength
    scale = 1 + rand() * 0.1 * strength
    tx, ty = rand() * 0.08 * strength, rand() * 0.08 * strength
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
