"""A small digits classifier: the quality judge for the reference model (class accuracy, feature distance).

It looks at images downsampled to 32×32, so it judges the digit's shape rather than single pixels; its 128-wide
penultimate layer is the feature space of the Fréchet distance.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .digits import NUM_CLASSES

CLASSIFIER_INPUT = 32
FEATURE_DIM = 128


class DigitClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),   # 16×16
            nn.Conv2d(32, 64, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),  # 8×8
            nn.Conv2d(64, 64, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),  # 4×4
        )
        self.features_fc = nn.Linear(64 * 16, FEATURE_DIM)
        self.logits_fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) images in [0, 1] at any size -> (B, 128) features."""
        x = F.interpolate(images.float(), size=(CLASSIFIER_INPUT, CLASSIFIER_INPUT), mode="area")
        return F.gelu(self.features_fc(self.conv(x * 2 - 1).flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_fc(self.features(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self(images).argmax(-1)
