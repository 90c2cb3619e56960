"""Every shipped workflow loads against this ComfyUI's node registry: node types exist, widget values are valid,
links connect matching types, every required input that is not a widget is linked, and the files are what
workflows/make_workflows.py writes. A renamed input, a removed core node or a dropped link fails here, not in a
user's graph (tests/browser then loads and runs them in ComfyUI's front end)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

WORKFLOW_DIR = Path(__file__).resolve().parents[2] / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
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


def unlinked_required_inputs(graph: dict, node_registry) -> list[str]:
    """Required inputs that are not widgets (MODEL, CONDITIONING, ...) and have no link: ComfyUI's validation
    rejects such a node ("Required input missing") and drops its branch, while the rest of the graph still runs."""
    missing = []
    for node in graph["nodes"]:
        if node["type"] in UI_ONLY or node["type"] not in node_registry or node.get("mode", 0) != 0:
            continue
        spec = node_registry[node["type"]].INPUT_TYPES()
        widgets = {name for name, _, _ in _widget_inputs(node_registry[node["type"]])}
        links = {inp["name"]: inp.get("link") for inp in node["inputs"]}
        for name in spec.get("required", {}):
            if name not in widgets and links.get(name) is None:
                missing.append(f"{node.get('title', node['type'])} (node {node['id']}, {node['type']}).{name}")
    return missing


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_workflows", WORKFLOW_DIR / "make_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_workflow_has_its_thumbnail():
    """ComfyUI's template browser shows workflows/<name>.jpg as the thumbnail of workflows/<name>.json."""
    lacking = [p.name for p in WORKFLOWS if not p.with_suffix(".jpg").exists()]
    assert not lacking, f"no thumbnail for {lacking}: DIT_ACCEL_UPDATE_SCREENSHOTS=1 pytest tests/browser takes them"


def test_committed_workflows_are_the_generators_output():
    """The JSON files are make_workflows.py's output, so the checks on the generator below cover what ships."""
    gen = _load_generator()
    expected = {f"{name}.json": gen.render(build) for name, build in gen.WORKFLOWS.items()}
    assert sorted(p.name for p in WORKFLOWS) == sorted(expected), "run python workflows/make_workflows.py"
    for path in WORKFLOWS:
        assert path.read_text() == expected[path.name], f"{path.name} is stale: run python workflows/make_workflows.py"


def test_dropping_any_link_of_the_generator_fails_the_guard(node_registry, monkeypatch):
    """Reverting any one `g.link(...)` into a required input (a pack node's `model` above all) is caught: each
    link of every workflow is dropped in turn and the guard must name the input left open. Links into optional
    inputs (a calibration prompt) may be dropped: the node runs without them."""
    gen = _load_generator()
    real_link = gen.Graph.link
    checked = 0
    for name, build in gen.WORKFLOWS.items():
        for skip in range(len(build()["links"])):
            dropped = []

            def link(self, src, src_slot, dst, dst_input, _count=iter(range(10**6)), _skip=skip, _dropped=dropped):
                if next(_count) == _skip:
                    _dropped.append((self.nodes[dst - 1], dst_input))
                else:
                    real_link(self, src, src_slot, dst, dst_input)
            monkeypatch.setattr(gen.Graph, "link", link)
            graph = build()
            monkeypatch.setattr(gen.Graph, "link", real_link)
            (node, input_name), = dropped
            if input_name not in node_registry[node["type"]].INPUT_TYPES().get("required", {}):
                continue
            checked += 1
            missing = unlinked_required_inputs(graph, node_registry)
            assert any(f"(node {node['id']}, {node['type']}).{input_name}" in m for m in missing), \
                f"{name}: dropping the link into {node['type']}.{input_name} went unnoticed"
    assert checked, "no link into a required input was tried"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_valid_in_this_comfyui(path, node_registry, comfy_version):
    graph = json.loads(path.read_text())
    missing = unlinked_required_inputs(graph, node_registry)
    assert not missing, f"{path.name}: required inputs without a link (the front end refuses the node): {missing}"
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
