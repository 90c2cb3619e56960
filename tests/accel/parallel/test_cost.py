"""The paper model of multi-GPU sampling: the design document carries its tables as the code prints them, and the cfg
axis behaves as modelled (nothing to split at one row per call; half the rows per all-to-all)."""
from pathlib import Path

from dit_accel.accel.parallel.cost import LINKS, SHAPES, cfg_table, modelled_step, modelled_step_cfg, table

DOC = Path(__file__).resolve().parents[3] / "docs" / "multi_gpu.md"


def test_the_design_document_carries_the_models_tables():
    text = DOC.read_text()
    assert table() in text and cfg_table() in text, "rerun `python -m dit_accel.accel.parallel.cost` into the doc"


def test_the_cfg_axis_needs_two_rows_and_halves_each_all_to_all():
    link = LINKS[0]
    assert modelled_step_cfg(SHAPES["flux-dev-1024"], 2, 1, link) is None  # guidance-distilled: one row per call
    wan = SHAPES["wan-14b-480p-81f"]
    assert modelled_step_cfg(wan, 2, 2, link)["comm_s"] < modelled_step(wan, 4, link)["comm_s"]
    assert modelled_step_cfg(wan, 2, 1, link)["speedup"] > modelled_step(wan, 2, link)["speedup"]
