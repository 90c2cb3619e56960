"""CG-Taylor's confidence gate on the model-output forecast: the first block decides, the rest is skipped."""
import pytest
import torch

from dit_accel.accel.forecasting.confidence_gate import ConfidenceGatedForecastPatch
from dit_accel.accel.forecasting.methods import ForecastSettings
from dit_accel.accel.forecasting.output_forecast import OutputForecastConfig, OutputForecastPatch
from dit_accel.accel.caching.predictors import ForecastConfig

TAYLOR = ForecastConfig("taylor", order=1)
STEPS = 20


def _gated(threshold: float, interval: int = 5) -> ConfidenceGatedForecastPatch:
    return ConfidenceGatedForecastPatch(OutputForecastConfig(TAYLOR, interval=interval, gate="confidence",
                                                             threshold=threshold), label="cg-taylor")


def test_a_gate_that_never_trusts_matches_the_unpatched_model(tiny_wan, sample):
    expected, _, _ = sample(tiny_wan, steps=STEPS)
    out, summary, run = sample(tiny_wan, [_gated(threshold=1e-12)], steps=STEPS)
    # Float tolerance, not bits: the cond-only probe runs the first block on part of the batch, then the rest.
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert run.ledger.blocks_run == run.ledger.blocks_total == STEPS * 3
    assert "trusted the forecast on 0 of" in summary[0]


def test_a_trusted_probe_runs_only_the_first_block_and_emits_the_output_forecast(tiny_wan, sample):
    """Trusting every step it may, the gate computes at the warm-up step, every `interval` steps and the final
    step; what it emits is the Taylor forecast of the output, equal to that forecaster run on the same steps."""
    computes = frozenset({0, 5, 10, 15, 19})
    reference = OutputForecastPatch(OutputForecastConfig(TAYLOR, interval=5))
    reference.plan = lambda ctx: computes
    expected, _, _ = sample(tiny_wan, [reference], steps=STEPS)
    out, summary, run = sample(tiny_wan, [_gated(threshold=1e9)], steps=STEPS)
    assert torch.equal(out, expected)
    probes = STEPS - len(computes)
    assert run.ledger.blocks_total == STEPS * 3
    assert run.ledger.blocks_run == len(computes) * 3 + probes  # a trusted probe ran block 0 only
    assert f"ran {len(computes)}/{STEPS} model calls" in summary[0]
    assert f"trusted the forecast on {probes} of {probes} probed calls" in summary[0]
    # Under CFG the probe runs the first block on the cond rows only (2 of the 4 rows): in row-blocks,
    # 20 steps x 3 blocks x 4 rows in all, of which 5 computes x 3 x 4 plus 15 probes x 1 x 2 ran.
    assert f"with the probes, {240 / (60 + 30):.2f}x block compute speedup" in summary[0]
    assert not run.states  # the forecasters' memory is freed with the run


def test_the_threshold_trades_computes_for_speed(tiny_wan, sample):
    runs = [sample(tiny_wan, [_gated(threshold, interval=10)], steps=STEPS)[2].ledger.blocks_run
            for threshold in (1e-12, 0.3, 1e9)]
    assert runs[0] >= runs[1] >= runs[2] and runs[0] > runs[2]


def test_cg_taylor_forecasts_the_output_by_default_and_the_stack_on_request():
    from dit_accel.accel.caching import BlockCachePatch
    assert isinstance(ForecastSettings("cg-taylor").patch(), ConfidenceGatedForecastPatch)
    assert isinstance(ForecastSettings("cg-taylor", granularity="stack").patch(), BlockCachePatch)


def test_the_confidence_gate_needs_its_own_patch_class():
    with pytest.raises(ValueError, match="ConfidenceGatedForecastPatch"):
        OutputForecastPatch(OutputForecastConfig(TAYLOR, gate="confidence"))
    with pytest.raises(ValueError, match="threshold"):
        OutputForecastConfig(TAYLOR, gate="confidence", threshold=-1.0)
