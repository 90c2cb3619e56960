"""The kernel microbenchmark's smoke mode runs end to end, and without a GPU the full run refuses clearly."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from dit_accel.bench import attention


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_smoke_mode_runs_and_writes_rows(tmp_path):
    # A fresh process: the interpreter must be switched on before triton is first imported.
    out = tmp_path / "attention.json"
    proc = subprocess.run([sys.executable, "-m", "dit_accel.bench.attention", "--smoke", "--correction",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["smoke"] and result["correction"]
    rows = result["rows"]
    assert [(r["tokens"], r["sparsity"]) for r in rows] == [(64, 0.5), (64, 0.75), (128, 0.5), (128, 0.75)]
    for r in rows:
        assert r["ms_ours"] > 0 and r["ms_sdpa"] > 0
        assert r["ideal"] == pytest.approx(1 / (1 - r["actual_sparsity"]))
        assert r["full_mask_max_err"] < 1e-4  # fp32 full-mask output equals SDPA's
    assert "sp/ideal" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_without_gpu_the_full_run_refuses_with_a_hint(capsys):
    assert attention.main(["--tokens", "1024"]) == 2
    assert "--smoke" in capsys.readouterr().err
