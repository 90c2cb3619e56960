"""The shapes bench: the table, the activation peak under FakeTensorMode, the CPU speed run and the GPU check's smoke."""
import dataclasses
import json

from dit_accel.bench.shapes.gpu import main as gpu_main
from dit_accel.bench.shapes.measure import activation_peak, speed_report
from dit_accel.bench.shapes.table import SHAPES


def test_the_table_has_the_tokens_comfyui_builds():
    assert SHAPES["wan-14b-480p-81f"].image_tokens == 21 * 30 * 52
    assert SHAPES["wan-14b-720p-81f"].image_tokens == 21 * 45 * 80
    assert SHAPES["hunyuan-video-720p-129f"].image_tokens == 33 * 45 * 80
    assert SHAPES["qwen-image-1328"].image_tokens == 83 * 83
    flux = SHAPES["flux-dev-1024"]
    assert flux.image_tokens == 4096 and flux.text_tokens == 256 and flux.depth == 57 and flux.rows == 1
    assert all(s.heads * 128 == s.width for s in SHAPES.values())


def test_activation_peak_grows_with_tokens():
    small = dataclasses.replace(SHAPES["wan-1.3b-480p-81f"], latent=(16, 1, 16, 16))
    large = dataclasses.replace(small, latent=(16, 1, 32, 32))
    a, b = activation_peak(small), activation_peak(large)
    hidden = small.rows * small.image_tokens * small.width * 2  # one bf16 hidden state
    assert hidden < a < b


def test_speed_report_measures_wall_compute_and_skipped_steps():
    shape = dataclasses.replace(SHAPES["wan-1.3b-480p-81f"], width=128, ffn=256)
    rows = speed_report(shape, ["forecast", "blockcache"], depth=2, height=8, width=8, steps=10)
    forecast = rows[0]
    assert forecast["speedup_compute"] > 1 and forecast["speedup_wall"] > 0
    assert forecast["skipped_step_cost"] is not None and forecast["skipped_step_cost"] < 1


def test_gpu_check_smoke_runs_every_method_on_cpu(tmp_path, capsys):
    assert gpu_main(["--smoke", "--json", str(tmp_path / "gpu.json")]) == 0
    results = json.loads((tmp_path / "gpu.json").read_text())["results"]
    assert {r["shape"] for r in results} == {"wan-1.3b-480p-33f", "flux-dev-1024"}
    assert all(r["speedup_compute"] >= 1 for r in results)
    # The compiler-on run of each node default: captured, equal to eager, broken only where the method decides.
    compiled = [r["compiled"] for r in results if "compiled" in r]
    assert len(compiled) == 2 * 2 and all(c["same_as_eager"] for c in compiled)
    assert all(c["graph_breaks"] >= 0 for c in compiled)
    assert "graph breaks: " in capsys.readouterr().err
