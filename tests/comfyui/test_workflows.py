"""Every shipped workflow loads against this ComfyUI's node registry: node types exist, widget values are valid,
links connect matching types. A renamed input or a removed core node fails here, not in a user's graph."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.json"))
UI_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Model files are the user's: a file name in a loader's list is checked by their ComfyUI, not by this test's.
MODEL_FILE_SUFFIXES = (".safetensors", ".sft", ".gguf", ".ckpt", ".pt", ".pth", ".bin")


def _widget_inputs(node_cls) -> list[tuple[str, object, dict]]:
    spec = node_cls.INPUT_TYPES()
    widgets = []
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            kind = entry[0]
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            if isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES:
                if not opts.get("forceInput"):
                    widgets.append((name, kind, opts))
    return widgets


def _check_value(node_type, name, kind, opts, value):
    where = f"{node_type}.{name} = {value!r}"
    options = kind if isinstance(kind, (list, tuple)) else opts.get("options")
    if options is not None:
        if isinstance(value, str) and value.endswith(MODEL_FILE_SUFFIXES):
            return
        assert value in options, f"{where}: not one of {options}"
    elif kind in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: not a number"
        if "min" in opts:
            assert value >= opts["min"], f"{where}: below min {opts['min']}"
        if "max" in opts:
            assert value <= opts["max"], f"{where}: above max {opts['max']}"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), where


def test_there_are_workflows():
    assert WORKFLOWS, "workflows/ has no JSON workflow"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_valid_in_this_comfyui(path, node_registry, comfy_version):
    graph = json.loads(path.read_text())
    nodes = {n["id"]: n for n in graph["nodes"]}
    used_ours = set()
    for node in graph["nodes"]:
        node_type = node["type"]
        if node_type in UI_ONLY:
            continue
        assert node_type in node_registry, f"{path.name}: node type {node_type!r} missing in ComfyUI {comfy_version}"
        if node_type.startswith("DiTAccel"):
            used_ours.add(node_type)
        node_cls = node_registry[node_type]
        spec = node_cls.INPUT_TYPES()
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        for inp in node["inputs"]:
            assert inp["name"] in declared, f"{path.name}: {node_type} has no input {inp['name']!r}"
        values = list(node.get("widgets_values", []))
        required = set(spec.get("required", {}))
        for name, kind, opts in _widget_inputs(node_cls):
            if not values and name not in required:
                break  # optional widgets left out: the UI fills in their defaults
            assert values, f"{path.name}: {node_type} lacks a value for widget {name!r}"
            _check_value(node_type, name, kind, opts, values.pop(0))
            if opts.get("control_after_generate"):
                values.pop(0)  # the UI stores "fixed"/"randomize" right after a seed
        assert not values, f"{path.name}: {node_type} has extra widget values {values}"
    for lid, src, src_slot, dst, dst_slot, type_ in graph["links"]:
        out_types = node_registry[nodes[src]["type"]].RETURN_TYPES
        assert out_types[src_slot] == type_, f"{path.name}: link {lid} carries {type_}, output is {out_types[src_slot]}"
        target = nodes[dst]["inputs"][dst_slot]
        declared = node_registry[nodes[dst]["type"]].INPUT_TYPES()
        declared = {**declared.get("required", {}), **declared.get("optional", {})}
        assert declared[target["name"]][0] == type_, f"{path.name}: link {lid} into {target['name']} type mismatch"
    assert used_ours, f"{path.name} uses no dit-accel node"
