"""The bundled reference model: its weights, its format, and that it draws the digit it is asked for."""
import pytest
import torch

from dit_accel.reference.assets import MODEL_FILE, load_classifier, load_model
from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
from dit_accel.reference.latent import model_latents_to_images
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule


def test_bundled_weights_have_the_promised_shape():
    model = load_model()
    cfg = model.cfg
    assert (cfg.dim, cfg.num_heads, cfg.num_layers, cfg.in_dim) == (256, 2, 8, 16)
    assert MODEL_FILE.stat().st_size <= 25 * 2 ** 20
    x = torch.zeros(1, 16, 1, 32, 32)
    tokens = model.patch_embedding(x).flatten(2).shape[-1]
    assert tokens >= 256


def test_label_context_rejects_bad_labels():
    with pytest.raises(ValueError, match="0–9"):
        label_context([11])


def test_samples_are_the_requested_digits():
    """A quick check (10 images, 10 steps); the bench measures the full-settings accuracy on 80 images."""
    model, classifier = load_model(), load_classifier()
    labels = torch.arange(10)
    noise = torch.randn(10, 16, 1, 32, 32, generator=torch.Generator().manual_seed(7))
    out = sample_euler_cfg(lambda x, t, c, o: model(x, t, c, o), noise, label_context(labels),
                           label_context([UNCONDITIONAL] * 10), simple_schedule(10), 4.0)
    predicted = classifier.predict(model_latents_to_images(out))
    assert (predicted == labels).float().mean() >= 0.8
