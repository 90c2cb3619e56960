"""Sampling helpers shared by the forecasting tests: two labels, CFG 4, Euler on the simple schedule."""
import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.host import AccelHost
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule

LABELS = (1, 2)


def forecast_noise():
    return torch.randn(len(LABELS), 16, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def sample_with(model, patches=(), steps=12, model_fn=None):
    """(output, log lines, run state) of sampling `model` with `patches` (none: the unpatched model), or with a
    hand-written `model_fn` instead."""
    cond, uncond = label_context(list(LABELS)), label_context([UNCONDITIONAL] * len(LABELS))
    if model_fn is not None:
        return sample_euler_cfg(model_fn, forecast_noise(), cond, uncond, simple_schedule(steps), 4.0), [], None
    if not patches:
        return sample_euler_cfg(lambda x, t, c, o: model(x, t, c, o), forecast_noise(), cond, uncond,
                                simple_schedule(steps), 4.0), [], None
    host = AccelHost(adapter_for(model), tuple(patches))
    with accelerated(host, model) as (fn, run, summary):
        out = sample_euler_cfg(fn, forecast_noise(), cond, uncond, simple_schedule(steps), 4.0)
    return out, summary, run


@pytest.fixture
def sample():
    return sample_with
