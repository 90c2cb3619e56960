"""Named head sets (JSON files in `presets/`): what HeadHunter found, or what a paper published, with their source.

A preset file:
    {"name": "reference-fd",                      # equals the file name without .json
     "family": "wan",                             # the adapter family it was found on
     "model": "...",                              # which model, in words
     "layers": 8, "heads_per_layer": 2,           # the model's shape, to refuse a preset on another model
     "heads": [[3, 1], [5, 0]],                   # (layer, head) pairs; [layer, "*"] for a whole layer
     "settings": {"scale": 2.0, "alpha": 1.0, "start_percent": 0.0, "end_percent": 1.0},  # found with these
     "source": "...",                             # how it was found (command) or the paper/code it is cited from
     ...}                                         # anything else (objective, scores) is kept as is
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .heads import ALL_HEADS, HeadPair, HeadSpecError, normalise, validate_heads

PRESET_DIR = Path(__file__).resolve().parent / "presets"
_SETTINGS = ("scale", "alpha", "start_percent", "end_percent")


@dataclass(frozen=True)
class HeadPreset:
    name: str
    family: str
    layers: int
    heads_per_layer: int
    heads: tuple[HeadPair, ...]
    source: str
    model: str = ""
    settings: dict = field(default_factory=dict, compare=False)
    extra: dict = field(default_factory=dict, compare=False)

    def to_json(self) -> dict:
        return {"name": self.name, "family": self.family, "model": self.model, "layers": self.layers,
                "heads_per_layer": self.heads_per_layer,
                "heads": [[layer, "*" if head is ALL_HEADS else head] for layer, head in self.heads],
                "settings": dict(self.settings), "source": self.source, **self.extra}

    def check_model(self, family: str, layers: int, heads_per_layer: int | None) -> None:
        """Refuse a preset made for another model shape, naming what it was made for."""
        if family != self.family or layers != self.layers or \
                (heads_per_layer is not None and heads_per_layer != self.heads_per_layer):
            raise HeadSpecError(
                f"head preset {self.name!r} was found on a {self.family} model with {self.layers} layers x "
                f"{self.heads_per_layer} heads ({self.model}); this model is {family} with {layers} layers x "
                f"{heads_per_layer or '?'} heads. Pick a preset for this model or write heads as 'layer:head'.")


def from_json(data: dict, name: str | None = None) -> HeadPreset:
    """Validate one preset's JSON; errors name the preset and the field."""
    label = name or data.get("name", "?")
    try:
        layers, per_layer = int(data["layers"]), int(data["heads_per_layer"])
        pairs = []
        for pair in data["heads"]:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise HeadSpecError(f"each head must be a [layer, head] pair, got {pair!r}")
            pairs.append((int(pair[0]), ALL_HEADS if pair[1] == "*" else int(pair[1])))
        heads = normalise(pairs)
        validate_heads(heads, layers, per_layer)
        if not heads:
            raise HeadSpecError("the head list is empty")
        if name is not None and data.get("name") != name:
            raise HeadSpecError(f"its name {data.get('name')!r} differs from its file name {name!r}")
        settings = {k: float(v) for k, v in dict(data.get("settings", {})).items() if k in _SETTINGS}
        known = {"name", "family", "model", "layers", "heads_per_layer", "heads", "settings", "source"}
        return HeadPreset(str(data["name"]), str(data["family"]), layers, per_layer, heads, str(data["source"]),
                          str(data.get("model", "")), settings, {k: v for k, v in data.items() if k not in known})
    except KeyError as err:
        raise HeadSpecError(f"head preset {label!r} lacks the field {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise HeadSpecError(f"head preset {label!r} is invalid: {err}") from None


def preset_names(directory: Path = PRESET_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.json"))


def load_preset(name: str, directory: Path = PRESET_DIR) -> HeadPreset:
    path = Path(directory) / f"{name}.json"
    if not path.exists():
        raise HeadSpecError(f"no head preset named {name!r}; available: {', '.join(preset_names(directory)) or 'none'}")
    return from_json(json.loads(path.read_text()), name)


def save_preset(preset: HeadPreset, directory: Path = PRESET_DIR) -> Path:
    from_json(preset.to_json(), preset.name)  # never write a file the loader would refuse
    path = Path(directory) / f"{preset.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(preset.to_json(), indent=2) + "\n")
    return path
