"""Every shipped workflow as a user meets it: a real ComfyUI server with the pack in `custom_nodes/`, its own front
end (comfyui-frontend-package) in headless Chromium driven by Playwright.

Each file in workflows/ is fetched from the server's template route and loaded through the front end; it must load
with no missing node, no dialog, and no node overlapping another once the front end has sized them. A workflow whose
`extra.dit_accel.models` is "reference" is queued with the Run button and must finish with images in every output
node and the pack's log line (its `log` patterns; a `done`/`of` pair must show work skipped). One that needs the
user's model files must be refused by the server's validation for those files and for nothing else.

Needs: ComfyUI (COMFYUI_PATH), `comfyui-frontend-package`, Playwright for Python and a Chromium executable
(DIT_ACCEL_CHROMIUM, else `chromium` on PATH). Without them every test here skips, saying which is missing;
DIT_ACCEL_REQUIRE_BROWSER=1 (set by .ci/run) turns that into a failure. DIT_ACCEL_UPDATE_SCREENSHOTS=1 also writes
each workflow's template thumbnail (workflows/<name>.jpg) and the README's docs/workflow_canvas.png.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

PACK_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))
PACK_FOLDER = "dit-accel"        # the pack's folder in custom_nodes/: the template category's name
README_SHOT = PACK_ROOT / "docs" / "workflow_canvas.png"
README_WORKFLOW = "Reference digits - DiT Block Cache vs plain"
UPDATE_SHOTS = os.environ.get("DIT_ACCEL_UPDATE_SCREENSHOTS") == "1"
VIEWPORT = {"width": 1600, "height": 900}
SERVER_START_S, RUN_S = 240, 600  # generous: CI machines are often shared
# A returning user's settings (no first-run tour or template browser over the canvas), and screenshots that show
# the graph alone: full node detail at any zoom, no minimap, no frame counter.
SETTINGS = {"Comfy.TutorialCompleted": True, "LiteGraph.Canvas.MinFontSizeForLOD": 0, "Comfy.Minimap.Visible": False,
            "Comfy.Graph.CanvasInfo": False, "Comfy.Graph.CanvasMenu": False}
SHOT_MARGIN = 24  # px of canvas kept around the graph in a screenshot
THUMBNAIL_WIDTH = 800
# Server validation's word for a model file the user has not downloaded (a combo value not in the folder's list).
MISSING_FILE_ERROR = "value_not_in_list"


def _missing_requirement() -> str | None:
    if not os.environ.get("COMFYUI_PATH") or not (Path(os.environ["COMFYUI_PATH"]) / "main.py").exists():
        return 'ComfyUI not found: set COMFYUI_PATH (eval "$(../shared/comfyui/setup.sh)")'
    for module, package in (("playwright", "playwright"), ("comfyui_frontend_package", "comfyui-frontend-package")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (pip install {package}; .ci/run installs it)"
    if not _chromium():
        return "no Chromium executable: apt-get install chromium, or set DIT_ACCEL_CHROMIUM"
    return None


def _chromium() -> str | None:
    return os.environ.get("DIT_ACCEL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


MISSING = _missing_requirement()
if MISSING and os.environ.get("DIT_ACCEL_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"DIT_ACCEL_REQUIRE_BROWSER=1 but {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, timeout: float = 60):
    """A GET to the server, which answers slowly while it samples on a busy CPU."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class Server:
    """ComfyUI serving its front end from a temporary base directory whose custom_nodes/ links to this pack (the
    snapshot itself is left untouched); the settings mark the first-run tour as done, as for a returning user."""

    def __init__(self, comfy: Path, base: Path):
        (base / "custom_nodes").mkdir(parents=True)
        (base / "custom_nodes" / PACK_FOLDER).symlink_to(PACK_ROOT, target_is_directory=True)
        (base / "user" / "default").mkdir(parents=True)
        (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(SETTINGS))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        args = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--base-directory", str(base), "--disable-auto-launch", "--database-url", "sqlite:///:memory:"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in ("PYTHONPATH", "TRITON_INTERPRET"):  # a user's ComfyUI: the pack from custom_nodes/, no
            env.pop(name, None)                           # Triton interpreter (CI sets it for the kernel tests)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, cwd=comfy, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                _get_json(self.url + "/system_stats", timeout=10)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ComfyUI did not answer in {SERVER_START_S} s:\n{self.log()[-3000:]}")
                time.sleep(0.5)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@pytest.fixture(scope="module")
def server():
    base = Path(tempfile.mkdtemp(prefix="dit-accel-browser-"))
    srv = Server(Path(os.environ["COMFYUI_PATH"]), base)
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(server.url)
        page.wait_for_function("() => window.app?.graph && window.app.canvas && window.app.extensionManager",
                               timeout=SERVER_START_S * 1000)
        # The front end hands the node types it could not find to every extension's afterConfigureGraph.
        page.evaluate("""() => app.registerExtension({name: 'dit-accel.browser-test',
                             afterConfigureGraph(missing) { window.__ditMissing = missing; }})""")
        yield page
        browser.close()


def _load(page, server, name: str) -> dict:
    """Load a workflow the way the template browser does: its JSON from the template route, then loadGraphData."""
    listed = _get_json(server.url + "/workflow_templates").get(PACK_FOLDER, [])
    assert name in listed, f"{name!r} is not among ComfyUI's templates for {PACK_FOLDER}: {listed}"
    page.evaluate("""async ([folder, name]) => {
        window.__ditMissing = null;
        const wf = await (await fetch(`/api/workflow_templates/${folder}/${encodeURIComponent(name)}.json`)).json();
        await app.loadGraphData(wf, true, true, name);
    }""", [PACK_FOLDER, name])
    page.wait_for_function("() => window.__ditMissing !== null")
    page.wait_for_timeout(300)  # one frame for the canvas to draw the graph
    return page.evaluate("""() => ({
        missing: window.__ditMissing.map(m => typeof m === 'string' ? m : m.type),
        dialogs: [...document.querySelectorAll('.p-dialog, [role=dialog]')]
                     .filter(d => d.offsetParent !== null).map(d => d.innerText.slice(0, 400)),
        nodes: app.graph._nodes.map(n => ({id: n.id, title: n.title, bounds: [...n.getBounding()],
                                            size: [...n.size], needs: [...n.computeSize()]})),
    })""")


def _overlaps(nodes: list[dict]) -> list[str]:
    found = []
    for i, a in enumerate(nodes):
        ax, ay, aw, ah = a["bounds"]
        for b in nodes[i + 1:]:
            bx, by, bw, bh = b["bounds"]
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                found.append(f"{a['title']!r} and {b['title']!r}")
    return found


def _run(page, server) -> tuple[int, dict]:
    """Press Run; returns the server's answer to the front end's POST /prompt (status, body)."""
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as answer:
        page.get_by_test_id("queue-button").click()
    response = answer.value
    return response.status, response.json()


def _wait_for_history(server, prompt_id: str) -> dict:
    deadline = time.monotonic() + RUN_S
    while time.monotonic() < deadline:
        try:
            entry = _get_json(f"{server.url}/history/{prompt_id}").get(prompt_id)
        except TimeoutError:
            continue
        if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
            return entry
        time.sleep(0.5)
    raise AssertionError(f"prompt {prompt_id} did not finish in {RUN_S} s:\n{server.log()[-3000:]}")


def _screenshot(page, path: Path, width: int | None = None):
    """The graph on the canvas in focus mode (menus hidden), cropped to its nodes and scaled to `width`; JPEG or
    PNG by the file's suffix."""
    from PIL import Image
    page.mouse.move(VIEWPORT["width"] - 2, 2)  # no tooltip of the Run button (or a node) in the picture
    page.evaluate("() => app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
    page.wait_for_timeout(500)
    left, top, right, bottom = page.evaluate("""() => {
        const corners = app.graph._nodes.flatMap(n => { const [x, y, w, h] = n.getBounding();
            return [app.canvas.ds.convertOffsetToCanvas([x, y]), app.canvas.ds.convertOffsetToCanvas([x + w, y + h])]; });
        return [Math.min(...corners.map(c => c[0])), Math.min(...corners.map(c => c[1])),
                Math.max(...corners.map(c => c[0])), Math.max(...corners.map(c => c[1]))];
    }""")
    clip = {"x": max(0, left - SHOT_MARGIN), "y": max(0, top - SHOT_MARGIN)}
    clip["width"] = min(VIEWPORT["width"], right + SHOT_MARGIN) - clip["x"]
    clip["height"] = min(VIEWPORT["height"], bottom + SHOT_MARGIN) - clip["y"]
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_suffix(".raw.png")
    page.screenshot(path=str(raw), clip=clip)
    page.evaluate("() => app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
    image = Image.open(raw).convert("RGB")
    if width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image.save(path, **({"quality": 80} if path.suffix == ".jpg" else {"optimize": True}))
    raw.unlink()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_loads_and_runs_in_the_front_end(path, server, page, tmp_path):
    name = path.stem
    meta = json.loads(path.read_text()).get("extra", {}).get("dit_accel", {})
    assert meta.get("models") in ("reference", "yours"), f"{path.name}: extra.dit_accel.models must be declared"
    state = _load(page, server, name)
    assert not state["missing"], f"{name}: the front end reports missing node types {state['missing']}"
    assert not state["dialogs"], f"{name}: a dialog opened on load: {state['dialogs']}"
    hidden = [f"{n['title']!r} {n['size']} < {n['needs']}" for n in state["nodes"]
              if n["size"][0] + 0.5 < n["needs"][0] or n["size"][1] + 0.5 < n["needs"][1]]
    assert not hidden, f"{name}: nodes too small for their widgets: {hidden}"
    overlaps = _overlaps(state["nodes"])
    assert not overlaps, f"{name}: overlapping nodes at the front end's sizes: {overlaps}"
    _thumbnail(page, path, tmp_path)  # as loaded; a run that finishes replaces it with one showing its images

    log_start = len(server.log())
    status, body = _run(page, server)
    if meta["models"] == "yours":
        assert status == 400, f"{name}: expected the server to refuse the missing model files, got {status} {body}"
        errors = [(node, e) for node, out in body.get("node_errors", {}).items() for e in out["errors"]]
        assert errors, f"{name}: refused without a node error: {body}"
        wrong = [(node, e) for node, e in errors if e["type"] != MISSING_FILE_ERROR
                 or not str(e["extra_info"].get("received_value", "")).endswith(".safetensors")]
        assert not wrong, f"{name}: refused for something other than a missing model file: {wrong}"
    else:
        assert status == 200 and body.get("prompt_id"), f"{name}: Run was refused: {status} {body}"
        entry = _wait_for_history(server, body["prompt_id"])
        log = server.log()[log_start:]
        assert entry["status"]["status_str"] == "success", f"{name}: {entry['status']}\n{log[-3000:]}"
        graph = json.loads(path.read_text())
        sinks = {str(n["id"]) for n in graph["nodes"] if not n["outputs"] and n["type"] in ("PreviewImage",
                                                                                              "SaveImage")}
        empty = [s for s in sinks if not entry["outputs"].get(s, {}).get("images")]
        assert not empty, f"{name}: output nodes {empty} produced no image: {entry['outputs']}"
        for pattern in meta.get("log", []):
            match = re.search(pattern, log)
            assert match, f"{name}: the server log lacks {pattern!r}:\n{log[-3000:]}"
            if {"done", "of"} <= set(match.groupdict()):
                assert int(match["done"]) < int(match["of"]), f"{name}: nothing skipped: {match[0]}"
        page.wait_for_timeout(500)  # previews drawn
        _thumbnail(page, path, tmp_path)
        if UPDATE_SHOTS and name == README_WORKFLOW:
            _screenshot(page, README_SHOT)


def _thumbnail(page, path: Path, tmp_path: Path):
    """Always taken (kept in pytest's tmp_path); written beside the workflow with DIT_ACCEL_UPDATE_SCREENSHOTS=1."""
    shot = tmp_path / f"{path.stem}.jpg"
    _screenshot(page, shot, THUMBNAIL_WIDTH)
    if UPDATE_SHOTS:
        shutil.copy(shot, path.with_suffix(".jpg"))



def test_template_browser_lists_every_workflow_with_title_and_thumbnail(server, page):
    """Templates -> Extensions -> dit-accel shows each workflow under its file name with its JPEG thumbnail."""
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.get_by_text(PACK_FOLDER, exact=True).first.click()
    try:
        for path in WORKFLOWS:
            card = page.get_by_test_id(f"template-workflow-{path.stem}")
            card.scroll_into_view_if_needed(timeout=15000)
            assert path.stem in card.inner_text(), f"{path.stem!r}: the card shows {card.inner_text()!r}"
            image = card.locator("img").first
            image.wait_for(timeout=15000)
            page.wait_for_function("img => img.complete", arg=image.element_handle(), timeout=15000)
            # The front end fetches <name>.jpg into a blob URL; an image with pixels means the file was served.
            assert image.evaluate("img => img.naturalWidth") > 0, f"{path.stem!r}: no thumbnail shown"
    finally:
        page.keyboard.press("Escape")
