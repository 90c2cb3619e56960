import pytest
import torch

from dit_accel.accel.context import StepContext, locate_step, split_streams


def test_streams_follow_cond_or_uncond_order_and_uuids():
    streams = split_streams([1, 0, 0], ["u", "a", "b"], 6)
    assert [(s.kind, s.key, s.rows) for s in streams] == [
        ("uncond", "u", slice(0, 2)), ("cond", "a", slice(2, 4)), ("cond", "b", slice(4, 6))]


def test_streams_without_sampler_keys_cover_the_batch():
    (only,) = split_streams(None, None, 5)
    assert only.kind == "cond" and only.rows == slice(0, 5)


def test_uneven_split_is_an_error():
    with pytest.raises(ValueError, match="cannot be split"):
        split_streams([0, 1], None, 3)


def test_step_located_in_schedule_even_after_dtype_cast():
    schedule = torch.tensor([1.0, 0.9, 0.5, 0.2, 0.0])
    assert locate_step(float(torch.tensor(0.5, dtype=torch.float16)), schedule) == (2, 4)
    assert locate_step(0.5, None) == (-1, 0)


def test_context_from_transformer_options():
    to = {"sigmas": torch.tensor([0.9, 0.9]), "sample_sigmas": torch.tensor([1.0, 0.9, 0.5, 0.0]),
          "cond_or_uncond": [0, 1], "uuids": ["c", "u"]}
    ctx = StepContext.from_transformer_options(to, 4)
    assert (ctx.step, ctx.total_steps, ctx.batch_size) == (1, 3, 4)
    assert ctx.sigma == pytest.approx(0.9)
    assert ctx.percent == pytest.approx(1 / 3)
    assert ctx.stream("u").rows == slice(2, 4) and ctx.stream("u").kind == "uncond"
    assert not ctx.is_first_step and not ctx.is_last_step
