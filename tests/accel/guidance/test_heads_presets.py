"""Head specs and preset files: parsing, validation against a model's shape, and the shipped presets."""
from __future__ import annotations

import json

import pytest

from dit_accel.accel.guidance.heads import (ALL_HEADS, HeadSpecError, by_layer, count_heads, format_heads,
                                            parse_heads, validate_heads)
from dit_accel.accel.guidance.presets import (HeadPreset, from_json, load_preset, preset_names, save_preset)


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


def test_count_heads_reads_the_model(tiny_wan):
    assert count_heads(tiny_wan) == tiny_wan.cfg.num_heads == 2


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
