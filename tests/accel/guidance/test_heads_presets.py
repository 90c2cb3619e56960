"""Head specs and preset files: parsing, validation against a model's shape, and the shipped presets."""
from __future__ import annotations

import json

import pytest

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.guidance.heads import ALL_HEADS, HeadSpecError, by_layer, format_heads, parse_heads, validate_heads
from dit_accel.accel.guidance.presets import (AUTO, HeadPreset, choose_heads, from_json, guidance_for_model,
                                              load_preset, preset_names, save_preset)


def test_parse_heads_reads_pairs_and_whole_layers():
    assert parse_heads(" 5:0, 3:1;3:0  6:*") == ((3, 0), (3, 1), (5, 0), (6, ALL_HEADS))
    assert parse_heads("2:*, 2:1") == ((2, ALL_HEADS),)  # the whole layer absorbs its single heads
    assert format_heads(parse_heads("3:1, 6:*")) == "3:1, 6:*"
    assert by_layer(parse_heads("3:1, 3:0, 6:*")) == {3: (0, 1), 6: None}


@pytest.mark.parametrize("text", ["", "3", "3:a", "x:1", "3:1:2"])
def test_parse_heads_rejects_what_it_cannot_read(text):
    with pytest.raises(HeadSpecError, match="layer:head"):
        parse_heads(text)


def test_validation_names_the_valid_range():
    validate_heads(parse_heads("0:0, 7:1, 7:*"), layers=8, heads_per_layer=2)
    with pytest.raises(HeadSpecError, match=r"layers run 0\.\.7"):
        validate_heads(parse_heads("8:0"), layers=8, heads_per_layer=2)
    with pytest.raises(HeadSpecError, match=r"heads run 0\.\.1"):
        validate_heads(parse_heads("3:2"), layers=8, heads_per_layer=2)


def test_the_adapter_reads_the_models_heads_per_layer(tiny_wan):
    assert adapter_for(tiny_wan).heads_per_layer(tiny_wan) == tiny_wan.cfg.num_heads == 2


def _preset_json(**changes) -> dict:
    data = {"name": "p", "family": "wan", "model": "m", "layers": 8, "heads_per_layer": 2, "heads": [[3, 1], [6, "*"]],
            "settings": {"scale": 2.0, "alpha": 0.5}, "source": "test", "objective": "fd"}
    return {**data, **changes}


def test_preset_round_trip(tmp_path):
    preset = from_json(_preset_json())
    assert preset.heads == ((3, 1), (6, ALL_HEADS)) and preset.settings == {"scale": 2.0, "alpha": 0.5}
    save_preset(preset, tmp_path)
    assert preset_names(tmp_path) == ["p"]
    again = load_preset("p", tmp_path)
    assert again == preset and again.extra == {"objective": "fd"}


@pytest.mark.parametrize("changes,message", [
    (dict(heads=[[9, 0]]), "layers run 0..7"),
    (dict(heads=[[3, 5]]), "heads run 0..1"),
    (dict(heads=[[3]]), "pair"),
    (dict(heads=[]), "empty"),
    (dict(source=None), "source"),
])
def test_invalid_presets_are_refused_with_the_reason(tmp_path, changes, message):
    data = _preset_json(**changes)
    if data.get("source") is None:
        del data["source"]
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(HeadSpecError, match=message):
        load_preset("p", tmp_path)


def test_unknown_preset_lists_the_available_ones(tmp_path):
    save_preset(from_json(_preset_json()), tmp_path)
    with pytest.raises(HeadSpecError, match="available: p"):
        load_preset("nope", tmp_path)


def test_preset_for_another_model_shape_is_refused():
    preset = from_json(_preset_json())
    preset.check_model("wan", 8, 2)
    with pytest.raises(HeadSpecError, match="8 layers x 2 heads"):
        preset.check_model("flux", 57, 24)


def test_every_shipped_preset_loads_and_cites_its_source():
    names = preset_names()
    assert names, "no head presets shipped"
    for name in names:
        preset = load_preset(name)
        assert isinstance(preset, HeadPreset) and preset.source.strip()


def test_auto_picks_the_preset_measured_on_this_model_shape(tmp_path):
    save_preset(from_json(_preset_json()), tmp_path)
    choice = choose_heads(AUTO, "wan", 8, 2, tmp_path)
    assert choice.heads == ((3, 1), (6, ALL_HEADS)) and choice.settings == {"scale": 2.0, "alpha": 0.5}
    assert "preset 'p'" in choice.source


@pytest.mark.parametrize("family,layers,heads", [("wan", 30, 12), ("wan", 8, 4), ("flux", 57, 24), ("sd3", 3, None)])
def test_auto_never_fails_elsewhere_and_takes_the_middle_layer(tmp_path, family, layers, heads):
    save_preset(from_json(_preset_json()), tmp_path)  # a wan 8 x 2 preset that fits none of these
    choice = choose_heads(AUTO, family, layers, heads, tmp_path)
    assert choice.heads == ((layers // 2, ALL_HEADS),) and choice.settings == {}
    assert f"no preset measured for a {family} model with {layers} blocks" in choice.source
    assert choose_heads("", family, layers, heads, tmp_path).heads == choice.heads


def test_a_named_preset_for_another_model_is_still_refused(tmp_path):
    save_preset(from_json(_preset_json()), tmp_path)
    with pytest.raises(HeadSpecError, match="found on a wan model with 8 layers x 2 heads.*this model is wan with 30"):
        choose_heads("p", "wan", 30, 12, tmp_path)
    with pytest.raises(HeadSpecError, match="neither 'auto', a preset \\(p\\)"):
        choose_heads("nope", "wan", 8, 2, tmp_path)
    assert choose_heads("1:0, 2:*", "wan", 3, 2, tmp_path).source == "heads as given"


def test_guidance_for_a_model_reads_its_shape_through_the_adapter(tiny_wan):
    settings = dict(scale=1.0, alpha=0.5, start_percent=0.0, end_percent=1.0)
    config, source = guidance_for_model(AUTO, tiny_wan, settings)
    assert config.heads == ((1, ALL_HEADS),) and "middle block 1" in source  # 3 blocks: no shipped preset fits
    assert (config.scale, config.alpha, config.end_percent) == (1.0, 0.5, 1.0)
    with pytest.raises(HeadSpecError, match="this model is wan with 3 layers"):
        guidance_for_model("reference-digits", tiny_wan, settings)
