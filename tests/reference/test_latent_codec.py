import torch

from dit_accel.reference import latent as codec


def test_encode_decode_round_trip_is_exact_enough():
    images = torch.rand(3, 1, 128, 128)
    raw = codec.encode(images)
    assert raw.shape == (3, 16, 1, 32, 32)
    torch.testing.assert_close(codec.decode(raw), images, atol=1e-5, rtol=0)


def test_model_space_is_pixels_in_minus_one_to_one():
    images = torch.zeros(1, 1, 128, 128)
    images[..., :64, :] = 1.0
    z = codec.process_in(codec.encode(images))
    assert torch.allclose(z.amax(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(z.amin(), torch.tensor(-1.0), atol=1e-5)


def test_decode_undoes_comfy_process_out():
    z = torch.randn(2, 16, 1, 8, 8).clamp(-1, 1)
    torch.testing.assert_close(codec.decode(codec.process_out(z)), codec.model_latents_to_images(z))
