"""Head guidance on the workers: SoftPAG's perturbed branch is a model call like the others, mirrored to every rank;
under Ulysses each rank holds a slice of the heads and perturbs only the chosen heads it holds. 2 ranks give the
one-process output, for a head on rank 0's slice, one on rank 1's, and under the cfg layout."""
import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.guidance.reference_objective import softpag_post_cfg
from dit_accel.accel.guidance.softpag import SoftPAGConfig, SoftPAGPatch
from dit_accel.accel.host import AccelHost
from dit_accel.accel.parallel.run import parallel_accelerated, with_sequence_parallel
from dit_accel.accel.parallel.ulysses import SequenceParallelConfig
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule

STEPS = 4


def _inputs():
    g = torch.Generator().manual_seed(4)
    return torch.randn(1, 16, 1, 16, 16, generator=g), torch.randn(1, 3, 64, generator=g), \
        torch.randn(1, 3, 64, generator=g)


def _sample(fn, config, noise, cond, uncond):
    return sample_euler_cfg(fn, noise, cond, uncond, simple_schedule(STEPS), 4.0, post_cfg=softpag_post_cfg(config))


@pytest.mark.parametrize("heads, mode", [(((1, 0),), "ulysses"), (((1, 1),), "ulysses"), (((0, 1),), "cfg")])
def test_softpag_on_two_ranks_equals_one_process(pool, make_wan, heads, mode):
    model, inputs = make_wan(layers=3), _inputs()  # 256 wide: 2 heads, one per rank under Ulysses
    config = SoftPAGConfig(heads=heads, scale=3.0)
    with accelerated(AccelHost(adapter_for(model), (SoftPAGPatch(config),)), model) as (fn, run1, _):
        single = _sample(fn, config, *inputs)
    host = with_sequence_parallel(AccelHost(adapter_for(model), (SoftPAGPatch(config),)),
                                  SequenceParallelConfig(2, mode))
    with parallel_accelerated(host, model, pool) as (fn, run2, _):
        double = _sample(fn, config, *inputs)
    with accelerated(AccelHost(adapter_for(model)), model) as (fn, _, _):
        unguided = sample_euler_cfg(fn, *inputs, simple_schedule(STEPS), 4.0)
    assert (single - unguided).abs().max() > 1e-3, "the guidance changed nothing: the test proves nothing"
    assert (double - single).abs().max() < 1e-4 * single.abs().max(), float((double - single).abs().max())
    assert run2.metrics["guidance_steps"] == run1.metrics["guidance_steps"] > 0
