import json

from dit_accel.bench.__main__ import main


def test_list_names_the_methods(capsys):
    assert main(["--list"]) == 0
    assert "none" in capsys.readouterr().out


def test_method_none_equals_full_and_reports_the_contract_fields(tmp_path):
    out = tmp_path / "none.json"
    assert main(["--model", "reference", "--method", "none", "--steps", "2", "--seeds", "1", "--json", str(out),
                 "--quiet"]) == 0
    result = json.loads(out.read_text())
    for key in ("method", "steps", "seeds", "speedup_compute", "speedup_wall", "psnr_db", "ssim", "class_accuracy",
                "class_accuracy_full", "fd_data", "fd_data_full"):
        assert key in result
    assert result["method"] == "none" and result["steps"] == 2 and result["seeds"] == 1
    assert result["speedup_compute"] == 1.0
    assert result["identical"] is True and result["max_abs_diff"] == 0.0
    assert result["ssim"] == 1.0 and result["class_accuracy"] == result["class_accuracy_full"]
    assert result["flops_full"] > 0


def test_no_flops_skips_the_compute_count_and_keeps_the_quality_numbers(tmp_path):
    out = tmp_path / "none.json"
    assert main(["--model", "reference", "--method", "none", "--steps", "2", "--seeds", "1", "--json", str(out),
                 "--quiet", "--no-flops"]) == 0
    result = json.loads(out.read_text())
    assert result["flops_full"] == 0 and result["flops_method"] == 0
    assert result["speedup_compute"] is None and result["cost_ratio"] is None
    assert result["identical"] is True and result["ssim"] == 1.0
