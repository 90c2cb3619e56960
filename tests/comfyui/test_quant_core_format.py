"""DiT Quantize's w4a8-core: our GPTQ-calibrated values written into ComfyUI core's asym_w4a8_int8 format. The file
loads through UNETLoader in a ComfyUI process where dit-accel was never imported, and every stored tensor and every
quantized layer's output there is bit-identical to what the bench runs (bench/methods_quant_core.py)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

PLAIN_COMFYUI = r"""
import json, sys
import torch
root, folder, name, inputs_path, out_path = sys.argv[1:6]
sys.path.insert(0, root)
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
import comfy.ops, comfy.quant_ops, folder_paths, nodes
from safetensors.torch import load_file, save_file
folder_paths.add_model_folder_path("diffusion_models", folder)
patcher = nodes.UNETLoader().load_unet(name, "default")[0]
dm = patcher.model.diffusion_model
inputs = load_file(inputs_path)
# The pack's own modules, not setuptools' editable-install finder (always in sys.modules, it imports nothing).
pack = [m for m in sys.modules if m.split(".")[0] == "dit_accel" or ("dit_accel" in m and not m.endswith("_finder"))]
out = {"pack_imported": torch.tensor([bool(pack)]),
       "ops_wrapped": torch.tensor([hasattr(comfy.ops.mixed_precision_ops, "_dit_accel_tlq_wrapped")])}
with torch.no_grad():
    for n, m in dm.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(w, comfy.quant_ops.QuantizedTensor):
            out[f"{n}.layout"] = torch.tensor(list(w._layout_cls.encode()), dtype=torch.uint8)
            for k, v in w.state_dict(f"{n}.weight").items():
                out[k] = v.view(torch.uint8) if v.dtype == torch.float8_e4m3fn else v
            out[f"{n}.out"] = m(inputs[n])
save_file(out, out_path)
"""


@pytest.fixture(scope="module")
def stats():
    """Calibration statistics from the bench's own calibration run (its seeds, the pure-torch reference model)."""
    from dit_accel.bench.methods_quant import calibrate
    from dit_accel.reference.assets import load_model
    return calibrate(load_model(), steps=2, images_per_digit=1, gram=True)


def test_gptq_core_w4a8_file_loads_without_the_pack_bit_identical_to_the_bench(reference_patcher, stats, tmp_path,
                                                                              comfy_root):
    from dit_accel.bench.methods_quant_core import CoreLayoutLinear, ours_w4a8, unavailable
    from dit_accel.accel.quant.config import CoreW4A8Config
    from dit_accel.nodes.comfy.loader import core_formats
    from dit_accel.nodes.quantize_node import quantize_model, save_quantized
    from dit_accel.reference.assets import load_model
    if "asym_w4a8_int8" not in core_formats() or unavailable():
        pytest.skip(f"this ComfyUI has no asym_w4a8_int8 (0.33+): {unavailable() or 'not in QUANT_ALGOS'}")
    quantized = quantize_model(reference_patcher, "w4a8-core", calibration=stats)
    save_quantized(quantized, str(tmp_path / "w4a8.safetensors"))
    bench = ours_w4a8(load_model(), CoreW4A8Config(calibration="gptq"), stats)
    layers = {n: m for n, m in bench.named_modules() if isinstance(m, CoreLayoutLinear)}
    assert len(layers) == 8 * 10
    gen = torch.Generator().manual_seed(0)
    inputs = {n: torch.randn(3, 7, m.qweight._params.orig_shape[1], generator=gen) for n, m in layers.items()}
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    subprocess.run([sys.executable, "-c", PLAIN_COMFYUI, str(comfy_root), str(tmp_path), "w4a8.safetensors",
                    str(tmp_path / "inputs.safetensors"), str(tmp_path / "out.safetensors")],
                   check=True, cwd=str(tmp_path), timeout=900)
    plain = load_file(str(tmp_path / "out.safetensors"))
    assert not plain.pop("pack_imported").item() and not plain.pop("ops_wrapped").item()
    for name, layer in layers.items():
        assert bytes(plain[f"{name}.layout"].tolist()).decode() == "AsymW4A8Int8Layout"
        params = layer.qweight._params
        stored = {"": layer.qweight._qdata, "_s_rel": params.scale, "_s_channel": params.s_channel,
                  "_codebook": params.codebook}
        for suffix, tensor in stored.items():
            mine = tensor.view(torch.uint8) if tensor.dtype == torch.float8_e4m3fn else tensor
            assert torch.equal(plain[f"{name}.weight{suffix}"], mine), f"{name}.weight{suffix}"
        with torch.no_grad():
            assert torch.equal(plain[f"{name}.out"], layer(inputs[name])), name
