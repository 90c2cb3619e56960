"""A ComfyUI whose family hook was renamed: that family disables itself with one warning, applying a node to such a
model is a clear error, the other families keep working and the pack still imports.

The "changed ComfyUI" is a copy of the installed model file with one hook renamed, imported as a sibling module, so
the check reads real ComfyUI source rather than a stand-in class.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest
import torch

from dit_accel.accel.adapters import registry
from dit_accel.accel.adapters.registry import UnsupportedModelError, adapter_for


def _ops():
    import comfy.ops
    return dict(operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu")


def _tiny_lumina(module):
    return module.NextDiT(patch_size=2, in_channels=4, dim=64, n_layers=2, n_refiner_layers=1, n_heads=4,
                          n_kv_heads=4, multiple_of=16, ffn_dim_multiplier=4.0, qk_norm=True, cap_feat_dim=32,
                          axes_dims=[4, 6, 6], axes_lens=[64, 64, 64], **_ops())


def _tiny_ltxav(module):
    return module.LTXAVModel(in_channels=8, audio_in_channels=128, cross_attention_dim=64,
                             audio_cross_attention_dim=32, attention_head_dim=16, audio_attention_head_dim=8,
                             num_attention_heads=4, audio_num_attention_heads=4, caption_channels=32, num_layers=1,
                             connector_attention_head_dim=8, connector_num_attention_heads=4, connector_num_layers=1,
                             **_ops())


# family: (ComfyUI file, package, the hook as ComfyUI spells it, its renamed spelling, tiny constructor)
RENAMES = {
    # NextDiT's main layer loop is where the object patch goes: renamed, there is nothing to patch.
    "lumina": ("comfy/ldm/lumina/model.py", "comfy.ldm.lumina", "self.layers", "self.main_layers", _tiny_lumina),
    # LTXAV's own block loop consults ("double_block", i); LTXVModel's (its base) still does after the rename.
    "ltxav": ("comfy/ldm/lightricks/av_model.py", "comfy.ldm.lightricks", '("double_block", i)', '("av_block", i)',
              _tiny_ltxav),
}


def _renamed_copy(comfy_root, tmp_path, family):
    path, package, hook, renamed, _ = RENAMES[family]
    source = (comfy_root / path).read_text()
    assert hook in source, f"{family}: the hook {hook!r} is not in this ComfyUI's {path}"
    copy = tmp_path / f"renamed_{family}.py"
    copy.write_text(source.replace(hook, renamed))
    name = f"{package}._dit_accel_renamed_{family}"
    spec = importlib.util.spec_from_file_location(name, copy)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # inspect reads a class's source through its module
    spec.loader.exec_module(module)
    return name, module


@pytest.mark.parametrize("family", sorted(RENAMES))
def test_renamed_hook_disables_the_family_once(family, comfy_root, tmp_path, monkeypatch, caplog):
    registry.supported_families()  # load the built-in families before isolating the registry
    monkeypatch.setattr(registry, "_ADAPTERS", dict(registry._ADAPTERS))
    monkeypatch.setattr(registry, "_DISABLED", {})
    name, module = _renamed_copy(comfy_root, tmp_path, family)
    try:
        model = RENAMES[family][4](module)
        with caplog.at_level("WARNING", logger="dit_accel"):
            for _ in range(2):
                with pytest.raises(UnsupportedModelError, match=rf"{family} is disabled \(") as err:
                    adapter_for(model)
        assert type(model).__name__ in str(err.value) and "Supported families: " in str(err.value)
        warnings = [r for r in caplog.records if "disabled" in r.getMessage()]
        assert len(warnings) == 1 and family in warnings[0].getMessage()
        assert family not in registry.supported_families()
        assert "wan" in registry.supported_families() and "flux" in registry.supported_families()
    finally:
        sys.modules.pop(name, None)
    import dit_accel
    importlib.reload(dit_accel)  # the pack still imports


@pytest.mark.parametrize("family", sorted(RENAMES))
def test_unchanged_copy_is_served(family, comfy_root, tmp_path, monkeypatch):
    """The same copy without the rename is served: the check reacts to the hook, not to the copying."""
    monkeypatch.setitem(RENAMES, family, RENAMES[family][:3] + (RENAMES[family][2],) + RENAMES[family][4:])
    name, module = _renamed_copy(comfy_root, tmp_path, family)
    try:
        assert adapter_for(RENAMES[family][4](module)).name == family
    finally:
        sys.modules.pop(name, None)
