"""The pack's shape: installable metadata, the one-way dependency rule, every package shipped."""
from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CORE_DIRS = ("accel", "kernels", "reference", "bench")


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, level) of every import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level))
    return out


def test_comfy_registry_metadata():
    comfy = PYPROJECT["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["Icon"]
    deps = " ".join(PYPROJECT["project"]["dependencies"])
    for name in ("torch", "numpy", "safetensors", "triton"):
        assert name in deps
    assert "test" in PYPROJECT["project"]["optional-dependencies"]


def test_core_never_imports_comfy_or_the_node_layer():
    offenders = []
    for folder in CORE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            for module, level in _imports(path):
                top = module.split(".")[0]
                if (level == 0 and top in {"comfy", "comfy_api", "comfy_extras", "nodes", "folder_paths"}) or \
                        (level > 0 and top == "nodes"):
                    offenders.append(f"{path.relative_to(ROOT)} imports {'.' * level}{module}")
    assert not offenders, offenders


def test_only_the_boundary_package_imports_comfy():
    # Node files build settings and call nodes/comfy/; the V3 node schema (comfy_api) is theirs to use.
    offenders = [f"{path.relative_to(ROOT)} imports {module}"
                 for path in [ROOT / "__init__.py", *(ROOT / "nodes").rglob("*.py")]
                 if (ROOT / "nodes" / "comfy") not in path.parents
                 for module, level in _imports(path) if level == 0 and module.split(".")[0] == "comfy"]
    assert not offenders, offenders


def test_kernels_import_nothing_above_them():
    kernels = ROOT / "kernels"
    for path in kernels.rglob("*.py"):
        for module, level in _imports(path):
            if level == 0:
                continue
            base = path.parents[level - 1]  # the package a relative import starts from
            assert base == kernels or kernels in base.parents, f"{path.relative_to(ROOT)}: {'.' * level}{module}"


def test_every_python_package_is_shipped():
    declared = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {"dit_accel." + ".".join(p.parent.relative_to(ROOT).parts) if p.parent != ROOT else "dit_accel"
             for p in ROOT.rglob("__init__.py")
             if not any(part in {"tests", "build", ".git", "outputs"} or part.endswith(".egg-info")
                        for part in p.relative_to(ROOT).parts)}
    assert found <= declared, f"packages missing from pyproject.toml: {sorted(found - declared)}"


def test_import_without_comfy_registers_nothing():
    import dit_accel
    assert "comfy" not in sys.modules or hasattr(dit_accel, "comfy_entrypoint")
    assert dit_accel.__version__ == PYPROJECT["project"]["version"]
