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

`choose_heads` turns what a user typed (a preset name, a 'layer:head' list, or `auto`) into heads for the model in
hand; `auto` never fails: a preset measured on this model's shape where one ships, else every head of the middle
layer (layer-level PAG, the baseline the head-level methods are compared with).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .heads import ALL_HEADS, HeadPair, HeadSpecError, normalise, parse_heads, validate_heads

PRESET_DIR = Path(__file__).resolve().parent / "presets"
AUTO = "auto"  # the heads setting that picks a measured preset for the model, or the layer-level default
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


@dataclass(frozen=True)
class HeadChoice:
    """The heads a setting resolved to on one model, the settings a preset was found with, and where they came
    from (said in the run's log line)."""

    heads: tuple[HeadPair, ...]
    settings: dict
    source: str


def matching_presets(family: str, layers: int, heads_per_layer: int | None,
                     directory: Path = PRESET_DIR) -> list[HeadPreset]:
    """The shipped presets measured on a model of this family and shape (a preset says it in its fields)."""
    out = []
    for name in preset_names(directory):
        preset = load_preset(name, directory)
        try:
            preset.check_model(family, layers, heads_per_layer)
        except HeadSpecError:
            continue
        out.append(preset)
    return out


def middle_layer_heads(layers: int) -> tuple[HeadPair, ...]:
    """The default where no preset is measured: every head of the middle block (layer-level PAG). The head-level
    paper's baseline is PAG on whole layers; a middle layer sits apart from the first blocks (closest to the
    patch embedding) and the last ones (closest to the output), where identity attention disturbs most."""
    return ((layers // 2, ALL_HEADS),)


def choose_heads(text: str, family: str, layers: int, heads_per_layer: int | None,
                 directory: Path = PRESET_DIR) -> HeadChoice:
    """Heads for a model of `family` with `layers` blocks from a preset name, a 'layer:head' list or `auto`.

    Raises HeadSpecError naming the fix for a list outside the model or a preset measured on another model; `auto`
    never raises.
    """
    name = text.strip()
    if name in ("", AUTO):
        found = matching_presets(family, layers, heads_per_layer, directory)
        if found:
            return HeadChoice(found[0].heads, dict(found[0].settings),
                              f"preset {found[0].name!r}, measured on a model of this shape "
                                                                f"({found[0].model or family})")
        heads = middle_layer_heads(layers)
        return HeadChoice(heads, {}, f"no preset measured for a {family} model with {layers} blocks: every head of "
                                     f"the middle block {heads[0][0]} (layer-level PAG)")
    if name in preset_names(directory):
        preset = load_preset(name, directory)
        preset.check_model(family, layers, heads_per_layer)
        return HeadChoice(preset.heads, dict(preset.settings), f"preset {name!r}")
    if not any(ch.isdigit() for ch in name):
        shipped = ", ".join(preset_names(directory)) or "none shipped"
        raise HeadSpecError(f"heads {name!r} is neither {AUTO!r}, a preset ({shipped}) nor a 'layer:head' list such "
                            "as '3:1, 5:0'")
    heads = parse_heads(name)
    validate_heads(heads, layers, heads_per_layer)
    return HeadChoice(heads, {}, "heads as given")


def guidance_for_model(heads: str, diffusion_model, settings: dict, use_preset_settings: bool = False):
    """(SoftPAGConfig, how its heads were chosen) for `diffusion_model` from the heads setting and the guidance
    settings (scale, alpha, start_percent, end_percent); with `use_preset_settings` a preset's own settings win."""
    from ..adapters.registry import adapter_for
    from .softpag import SoftPAGConfig
    adapter = adapter_for(diffusion_model)
    choice = choose_heads(heads, adapter.name, len(adapter.block_layout(diffusion_model)),
                          adapter.heads_per_layer(diffusion_model))
    merged = {**settings, **choice.settings} if use_preset_settings else dict(settings)
    return SoftPAGConfig(heads=choice.heads, **merged), choice.source
