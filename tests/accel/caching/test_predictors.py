"""Taylor residual forecasts: exact on polynomials of their order, per-row histories, reuse at order 0."""
import pytest
import torch

from dit_accel.accel.caching.predictors import TaylorResidual


def _feed(pred, f, times, rows=2):
    for t in times:
        pred.update(torch.ones(rows, dtype=torch.bool), torch.full((rows, 3), f(t)), t)


@pytest.mark.parametrize("order, f", [(0, lambda t: 2.0), (1, lambda t: 3 * t - 1), (2, lambda t: 3 * t - 1)])
def test_forecast_is_exact_on_lines(order, f):
    pred = TaylorResidual(order)
    _feed(pred, f, [1.0, 0.8, 0.6][: order + 1])  # sigma falls, as in sampling
    for t in (0.5, 0.4):
        assert pred.predict(t)[0, 0].item() == pytest.approx(f(t), rel=1e-5, abs=1e-5)


def test_second_order_is_taylorseers_backward_difference_series():
    f = lambda t: 0.5 * t * t - t + 2  # noqa: E731
    h, times = -0.2, [1.0, 0.8, 0.6]
    pred = TaylorResidual(2)
    _feed(pred, f, times)
    f0, f1, f2 = (f(t) for t in times)
    d = -0.1  # forecast half a step past the last compute
    expected = f2 + (f2 - f1) / h * d + (f2 - 2 * f1 + f0) / h ** 2 * d * d / 2
    assert pred.predict(0.5)[0, 0].item() == pytest.approx(expected, rel=1e-5)


def test_first_order_on_a_quadratic_is_only_approximate():
    f = lambda t: t * t  # noqa: E731
    pred = TaylorResidual(1)
    _feed(pred, f, [1.0, 0.8])
    assert pred.predict(0.6)[0, 0].item() != pytest.approx(f(0.6), abs=1e-3)


def test_rows_keep_their_own_history():
    pred = TaylorResidual(1)
    pred.update(torch.tensor([True, True]), torch.tensor([[1.0], [1.0]]), 1.0)
    pred.update(torch.tensor([True, False]), torch.tensor([[2.0], [9.0]]), 0.5)  # row 1 did not compute
    out = pred.predict(0.25)
    assert out[0, 0].item() == pytest.approx(2.5)   # slope -2 per unit sigma, 0.25 further
    assert out[1, 0].item() == pytest.approx(1.0)   # one compute only: no slope yet, plain reuse


def test_same_sigma_twice_adds_no_slope():
    pred = TaylorResidual(1)
    _feed(pred, lambda t: 1.0, [0.5])
    pred.update(torch.ones(2, dtype=torch.bool), torch.full((2, 3), 3.0), 0.5)
    assert torch.isfinite(pred.predict(0.4)).all()
    assert pred.predict(0.4)[0, 0].item() == pytest.approx(3.0)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_rows_update_writes_into_its_own_buffers_with_the_masked_values(order, dtype):
    """A computed step's update keeps the history in the buffers it already had (no whole-activation allocation of
    its own), bit for bit the masked path's history, and never writes into the value a caller handed it."""
    torch.manual_seed(0)
    fast, masked = TaylorResidual(order), TaylorResidual(order)
    every = torch.ones(2, dtype=torch.bool)
    values = [torch.randn(2, 5, 3).to(dtype) for _ in range(6)]
    for step, (t, value) in enumerate(zip([1.0, 0.83, 0.61, 0.42, 0.3, 0.17], values)):
        buffers = {term.data_ptr() for term in fast.terms[1:]}
        kept = value.clone()
        fast.update(every, value, t, all_rows=True)
        masked.update(every, value.clone(), t)
        assert torch.equal(value, kept)  # the caller's tensor is unchanged
        assert fast.terms[0] is value
        if step > order:  # past the zero-filled start: only the history's own buffers are written
            assert {term.data_ptr() for term in fast.terms[1:]} == buffers
        for a, b in zip(fast.terms, masked.terms):
            assert torch.equal(a, b)
        # The shared-interval forecast fuses each term's multiply-add (one rounding where the per-row path has two).
        torch.testing.assert_close(fast.predict(t - 0.05), masked.predict(t - 0.05))
