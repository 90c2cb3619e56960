"""DiT Quantize's layer selection on every family's tiny config in real ComfyUI: the block linears the family's
adapter names are converted (and nothing else), core's mixed-precision ops load the result, and it still runs close
to the 16-bit model."""
from __future__ import annotations

import pytest
import torch
import test_families
from test_families import FAMILIES, _build, _flat, _forward

# The block lists of each family's ComfyUI class, written out here (not asked of the adapters under test).
BLOCK_LISTS = {"wan": ("blocks",), "flux": ("double_blocks", "single_blocks"),
               "chroma": ("double_blocks", "single_blocks"), "qwen_image": ("transformer_blocks",),
               "hunyuan_video": ("double_blocks", "single_blocks"), "sd3": ("joint_blocks",),
               "ltxv": ("transformer_blocks",), "ltxav": ("transformer_blocks",), "lumina": ("layers",),
               "z_image": ("layers",)}
SIXTEEN_BIT = ("mod", "adaLN", "norm", "embed")  # modulation, norms and embeddings stay 16-bit


def _ops():
    import comfy.ops
    return dict(operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu")


def _wan():
    from comfy.ldm.wan.model import WanModel
    m = WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=8, in_dim=4, dim=64, ffn_dim=128, freq_dim=32,
                 text_dim=32, out_dim=4, num_heads=4, num_layers=2, **test_families._ops())
    return m, dict(x=torch.randn(2, 4, 2, 8, 8), context=torch.randn(2, 8, 32)), {"block": 2}


ALL = {**FAMILIES, "wan": _wan}


def _expected(model, name) -> set[str]:
    lists = BLOCK_LISTS[name]
    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.split(".")[0] in lists
            and n.split(".")[1].isdigit() and not any(t.lower() in n.lower() for t in SIXTEEN_BIT)}


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_family_quantizes_its_block_linears_and_loads_in_core(name, comfy_root, monkeypatch):
    import comfy.ops
    from comfy.quant_ops import QuantizedTensor

    from dit_accel.accel.quant import WeightOnlyConfig
    from dit_accel.accel.quant.api import layer_filter_for
    from dit_accel.accel.quant.serialize import quantize_state_dict
    from dit_accel.nodes.comfy import quant_layout
    assert quant_layout.install()
    monkeypatch.setitem(FAMILIES, "wan", _wan)
    model, inputs, _ = _build(name)
    expected = _expected(model, name)
    assert expected
    state = quantize_state_dict(model.state_dict(), WeightOnlyConfig(bits=4), layer_filter_for(model))
    converted = {k[:-len(".comfy_quant")] for k in state if k.endswith(".comfy_quant")}
    assert converted == expected
    # Every block of every list has converted linears (Lumina's layers.N included).
    blocks = {".".join(n.split(".")[:2]) for n in converted}
    assert blocks == {f"{lst}.{i}" for lst in BLOCK_LISTS[name] for i in range(len(model.get_submodule(lst)))}

    # Core's mixed-precision ops (what UNETLoader builds for a file with comfy_quant layers) load the state dict.
    mixed = dict(operations=comfy.ops.mixed_precision_ops({}, torch.float32), dtype=torch.float32, device="cpu")
    monkeypatch.setattr(test_families, "_ops", lambda: mixed)
    loaded, _, _ = _build(name)
    missing, unexpected = loaded.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if not k.endswith("comfy_quant")]
    quantized = {n for n, m in loaded.named_modules() if isinstance(getattr(m, "weight", None), QuantizedTensor)}
    assert quantized == expected
    with torch.no_grad():
        ref = _flat(_forward(model, inputs, 0.75, {}))
        out = _flat(_forward(loaded, inputs, 0.75, {}))
    assert not torch.equal(out, ref)
    assert float((out - ref).norm() / ref.norm()) < 0.3   # 4-bit weights on random 0.05-std blocks: a few %
