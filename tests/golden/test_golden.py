"""Every method at fixed settings gives bit-identical latents to the outputs recorded before issue 22's refactor.

The cases, the sampler and the regeneration command are in `golden_cases.py`.
"""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from dit_accel.reference.assets import load_model

from golden_cases import CASES, GOLDEN_FILE, environment, run_case


def _recorded() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(GOLDEN_FILE), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}, f.metadata() or {}


GOLDEN, RECORDED_ON = _recorded()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_model()


def test_every_case_is_recorded_and_every_recording_is_a_case():
    assert sorted(GOLDEN) == sorted(CASES), "regenerate the missing case with golden_cases.py --overwrite --only NAME"


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_are_bit_identical_to_the_recording(model, name):
    here = environment()
    if here != RECORDED_ON:
        pytest.skip(f"goldens were recorded on {RECORDED_ON}, this is {here}: float rounding may differ")
    out = run_case(name, model)
    golden = GOLDEN[name]
    assert out.shape == golden.shape and out.dtype == golden.dtype
    assert torch.equal(out, golden), (f"{name}: max |diff| {float((out - golden).abs().max()):.3g} against the "
                                      "output recorded before the refactor")
