"""Quality metrics: accelerated vs full-compute images, and both vs real digits in the classifier's feature space.

Library choices: PSNR and SSIM from scikit-image, the matrix square root of the Fréchet distance from SciPy.
"""
from __future__ import annotations

import numpy as np
import torch


def _numpy_images(images: torch.Tensor) -> np.ndarray:
    """(B, 1, H, W) in [0, 1] -> (B, H, W) float64."""
    return images.detach().float().cpu().numpy()[:, 0].astype(np.float64)


def psnr_db(test: torch.Tensor, reference: torch.Tensor) -> float | None:
    """Mean PSNR over images in dB; None when every image is identical (infinite PSNR)."""
    from skimage.metrics import peak_signal_noise_ratio
    a, b = _numpy_images(test), _numpy_images(reference)
    values = [peak_signal_noise_ratio(r, t, data_range=1.0) for t, r in zip(a, b) if not np.array_equal(t, r)]
    if not values:
        return None
    # Identical images count at a finite ceiling so one exact image does not make the mean infinite.
    values += [100.0] * (len(a) - len(values))
    return float(np.mean(values))


def ssim(test: torch.Tensor, reference: torch.Tensor) -> float:
    from skimage.metrics import structural_similarity
    a, b = _numpy_images(test), _numpy_images(reference)
    return float(np.mean([structural_similarity(r, t, data_range=1.0) for t, r in zip(a, b)]))


def class_accuracy(classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((classifier.predict(images).cpu() == labels.cpu()).float().mean())


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula, our classifier's features)."""
    from scipy import linalg
    a = features_a.double().cpu().numpy()
    b = features_b.double().cpu().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # near-singular product: regularise, as the FID reference code does
        eps = np.eye(len(mu_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))
