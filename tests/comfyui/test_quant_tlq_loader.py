"""Codebook files (uniform-w* and TLQ) through ComfyUI's own UNETLoader (nodes.py), on every snapshot: bit-identical
to the model that was saved, our layout's GEMM in the forward, LoRA through LoraLoaderModelOnly, no 16-bit weights
made while loading, and twin-log files from the former tlq-w6/w8 schemes still loading."""
from __future__ import annotations

import functools

import torch
from safetensors.torch import save_file
from test_quant_nodes import _rel
from test_quant_nodes import assert_lora_matches_16bit, lora_weights
from test_quant_nodes import _sample as _sample_steps

_sample = functools.partial(_sample_steps, steps=3)


def _unet_loader(folder, name):
    import folder_paths
    import nodes
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    return nodes.UNETLoader().load_unet(name, "default")[0]


def _tlq_layers(patcher):
    from comfy.quant_ops import QuantizedTensor
    return {n: m for n, m in patcher.model.diffusion_model.named_modules()
            if isinstance(getattr(m, "weight", None), QuantizedTensor)}


def _saved(reference_patcher, tmp_path, scheme):
    from dit_accel.nodes.quantize_node import quantize_model, save_quantized
    quantized = quantize_model(reference_patcher, scheme)
    save_quantized(quantized, str(tmp_path / f"{scheme}.safetensors"))
    return quantized


def test_tlq_file_loads_through_unetloader_bit_identical(reference_patcher, node_registry, tmp_path, monkeypatch):
    import sys

    from comfy.quant_ops import get_layout_class
    quantized = _saved(reference_patcher, tmp_path, "uniform-w3")   # 3 bits: two bit planes per weight
    loaded = _unet_loader(tmp_path, "uniform-w3.safetensors")
    layers = _tlq_layers(loaded)
    assert len(layers) == 8 * 10 and {m.weight._layout_cls for m in layers.values()} == {"DitAccelTLQ3Layout"}
    saved, back = quantized.model.diffusion_model.state_dict(), loaded.model.diffusion_model.state_dict()
    assert saved.keys() == back.keys()
    assert all(torch.equal(getattr(saved[k], "_qdata", saved[k]), getattr(back[k], "_qdata", back[k]))
               for k in saved)
    # The copy of the pack that registered the layout (ComfyUI imports the pack under its folder name) is the one
    # whose ops run: count its codebook GEMM calls and any dequantize (the fallback that would materialise W).
    layout = get_layout_class("DitAccelTLQ3Layout")
    owner = sys.modules[layout.__module__]
    gemm, dequant = [], []
    real_gemm, real_dequant = owner.codebook_linear, layout.dequantize
    monkeypatch.setattr(owner, "codebook_linear", lambda *a, **k: gemm.append(1) or real_gemm(*a, **k))
    monkeypatch.setattr(layout, "dequantize", lambda *a, **k: dequant.append(1) or real_dequant(*a, **k))
    out = _sample(loaded)
    assert len(gemm) >= 80 and not dequant                    # every TLQ linear ran the codebook GEMM, none fell back
    monkeypatch.undo()
    assert torch.equal(out, _sample(quantized))


def test_a_twin_log_file_of_a_former_tlq_scheme_still_loads_bit_identical(reference_patcher, node_registry,
                                                                          tmp_path, monkeypatch):
    """DiT Quantize wrote twin-log files as tlq-w6 before it kept TLQ only where it wins; they load unchanged."""
    from dit_accel.accel.quant.twin_log import uniform_codebook
    from dit_accel.nodes import quantize_node
    assert "tlq-w6" not in quantize_node.SCHEMES
    monkeypatch.setitem(quantize_node.SCHEMES, "tlq-w6", quantize_node.Scheme(
        "the former scheme", lambda g: quantize_node.WeightOnlyConfig(bits=6, group_size=g), True, True))
    quantized = _saved(reference_patcher, tmp_path, "tlq-w6")
    monkeypatch.undo()
    codebooks = [m.weight._params.codebook for m in _tlq_layers(quantized).values()]
    assert any(not torch.allclose(c, uniform_codebook(6)) for c in codebooks)   # really the twin-log fit
    loaded = _unet_loader(tmp_path, "tlq-w6.safetensors")
    saved, back = quantized.model.diffusion_model.state_dict(), loaded.model.diffusion_model.state_dict()
    assert saved.keys() == back.keys()
    assert all(torch.equal(getattr(saved[k], "_qdata", saved[k]), getattr(back[k], "_qdata", back[k]))
               for k in saved)
    assert torch.equal(_sample(loaded), _sample(quantized))


def test_loaded_tlq_layer_equals_the_pure_torch_layer(reference_patcher, tmp_path):
    """ComfyUI's layer (our layout inside core's Linear) computes exactly what accel's CodebookLinear does."""
    from dit_accel.accel.quant.serialize import module_from_state
    quantized = _saved(reference_patcher, tmp_path, "uniform-w4")
    name, layer = next(iter(_tlq_layers(quantized).items()))
    state = layer.state_dict(prefix=f"{name}.")
    ours = module_from_state(f"{name}.", state, layer.in_features, layer.out_features, layer.bias.detach())
    x = torch.randn(2, 5, layer.in_features, generator=torch.Generator().manual_seed(0))
    assert torch.equal(layer(x), ours(x))


def test_tlq_node_output_is_quantized_but_close(reference_patcher, tmp_path):
    quantized = _saved(reference_patcher, tmp_path, "uniform-w4")
    ref, out = _sample(reference_patcher), _sample(quantized)
    assert not torch.equal(ref, out)
    assert _rel(out, ref) < 0.1                                # 4-bit TLQ keeps the picture (measured 8 %, 3 steps)


def test_lora_loader_on_a_loaded_tlq_file(reference_patcher, node_registry, tmp_path):
    import folder_paths
    import nodes
    _saved(reference_patcher, tmp_path, "uniform-w4")
    loaded = _unet_loader(tmp_path, "uniform-w4.safetensors")
    lora = lora_weights()
    (tmp_path / "loras").mkdir()
    save_file(lora, str(tmp_path / "loras" / "test_lora.safetensors"))
    folder_paths.add_model_folder_path("loras", str(tmp_path / "loras"))

    def with_lora(model):
        return nodes.LoraLoaderModelOnly().load_lora_model_only(model, "test_lora.safetensors", 1.0)[0]

    q = assert_lora_matches_16bit(reference_patcher, loaded, with_lora, sample=_sample)
    assert torch.equal(_sample(loaded), q)                              # the LoRA did not leak into the base


def test_loading_a_tlq_file_never_materialises_16bit_weights(reference_patcher, node_registry, tmp_path):
    """Every floating-point tensor any torch op creates while UNETLoader loads the file is recorded (a dispatch
    mode): none has the shape of a quantized feed-forward weight (no 16-bit copy of those layers exists, even
    briefly), all of them together (the 16-bit parts, built and cast) are fewer elements than the quantized linears
    alone would need in 16 bits, and the loaded linears keep only their packed codes, scales and codebooks."""
    from torch.utils._python_dispatch import TorchDispatchMode
    quantized = _saved(reference_patcher, tmp_path, "uniform-w4")
    dense_elements = sum(m.in_features * m.out_features for m in _tlq_layers(quantized).values())

    created: list[tuple[tuple, int]] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if type(t) is torch.Tensor and t.is_floating_point():
                    created.append((tuple(t.shape), t.numel()))
            return out

    with Record():
        loaded = _unet_loader(tmp_path, "uniform-w4.safetensors")
    ffn_shapes = {(1024, 256), (256, 1024)}
    assert not [s for s, _ in created if s in ffn_shapes]
    assert sum(n for _, n in created) < dense_elements        # measured ~0.67x on 0.33.0
    layers = _tlq_layers(loaded)
    assert all(m.weight._qdata.dtype == torch.uint8 for m in layers.values())
    stored = sum(t.numel() * t.element_size() for m in layers.values() for t in m.weight.state_dict().values())
    assert stored * 3.5 < dense_elements * 2                   # packed: > 3.5x smaller than 16 bits


def test_quantize_reads_its_own_models_weights_not_a_clone_left_patched(reference_patcher):
    """Clones share one module: after sampling a patched clone (a LoRA), the module holds that clone's weights until
    ComfyUI swaps models. Quantizing the plain MODEL must still quantize the plain weights."""
    from dit_accel.nodes.quantize_node import quantize_model
    before = quantize_model(reference_patcher, "uniform-w4").model.diffusion_model.state_dict()
    key = "diffusion_model.blocks.0.self_attn.q.weight"
    patched = reference_patcher.clone()
    weight = patched.model.diffusion_model.blocks[0].self_attn.q.weight
    patched.add_patches({key: (torch.full_like(weight, 0.5),)}, 1.0)
    _sample(patched)
    after = quantize_model(reference_patcher, "uniform-w4").model.diffusion_model.state_dict()
    assert all(torch.equal(getattr(before[k], "_qdata", before[k]), getattr(after[k], "_qdata", after[k]))
               for k in before)
