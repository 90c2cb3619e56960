"""Real-ComfyUI fixtures. ComfyUI is found through COMFYUI_PATH, else the first of COMFYUI_PATHS, else the pack
sitting in `ComfyUI/custom_nodes/<folder>/`; without it every test here skips, saying how to get it.

One Python process can import only one ComfyUI, so `.ci/run` runs this folder once per snapshot in COMFYUI_PATHS.
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

PACK_ROOT = Path(__file__).resolve().parents[2]
HOW_TO = 'set COMFYUI_PATH (eval "$(../shared/comfyui/setup.sh)") or place the pack in ComfyUI/custom_nodes/'


def find_comfyui() -> Path | None:
    candidates = [os.environ.get("COMFYUI_PATH", "")]
    candidates += os.environ.get("COMFYUI_PATHS", "").split(os.pathsep)[:1]
    if PACK_ROOT.parent.name == "custom_nodes":
        candidates.append(str(PACK_ROOT.parent.parent))
    for c in candidates:
        if c and (Path(c) / "comfy" / "model_patcher.py").exists():
            return Path(c)
    return None


COMFYUI_ROOT = find_comfyui()


def pytest_collection_modifyitems(config, items):
    if COMFYUI_ROOT is not None:
        return
    if os.environ.get("DIT_ACCEL_REQUIRE_COMFYUI"):  # CI: a missing ComfyUI is a failure, not a skip
        raise pytest.UsageError(f"DIT_ACCEL_REQUIRE_COMFYUI is set but ComfyUI was not found: {HOW_TO}")
    skip = pytest.mark.skip(reason=f"ComfyUI not found: {HOW_TO}")
    for item in items:
        if "tests/comfyui" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def comfy_root() -> Path:
    if COMFYUI_ROOT is None:
        pytest.skip(f"ComfyUI not found: {HOW_TO}")
    root = str(COMFYUI_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)
    argv = sys.argv
    sys.argv = [argv[0], "--cpu"]  # ComfyUI parses its own arguments on import; CPU mode on these machines
    try:
        import comfy.options
        comfy.options.enable_args_parsing()
        import comfy.model_management  # noqa: F401 - parses the arguments now
    finally:
        sys.argv = argv
    import comfyui_version
    print(f"ComfyUI {comfyui_version.__version__} from {root}")
    return COMFYUI_ROOT


@pytest.fixture(scope="session")
def comfy_version(comfy_root) -> str:
    import comfyui_version
    return comfyui_version.__version__


@pytest.fixture(scope="session")
def node_registry(comfy_root) -> dict:
    """ComfyUI's node registry with its core nodes and this pack loaded as a custom node from its own folder."""
    import nodes
    loop = asyncio.new_event_loop()
    try:
        result = nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False)
        if asyncio.iscoroutine(result):
            loop.run_until_complete(result)
        ok = loop.run_until_complete(nodes.load_custom_node(str(PACK_ROOT)))
    finally:
        loop.close()
    assert ok, "ComfyUI failed to load dit-accel as a custom node (see the log above)"
    return nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="session")
def reference_patcher(comfy_root):
    """The bundled reference model loaded by ComfyUI's own loader (a ModelPatcher around WAN21)."""
    import comfy.sd
    from dit_accel.reference.assets import MODEL_FILE
    return comfy.sd.load_diffusion_model(str(MODEL_FILE))
