"""SoftPAG on every family adapter (ComfyUI's own model classes, tiny random configs): the main pass is unchanged,
the perturbed branch changes the output, and branching off the cond pass at the last layer gives the branch that
computes every block (across Flux's double -> single switch, joint attention, object-patched layers)."""
from __future__ import annotations

import pytest
import torch
from test_families import FAMILIES, _build, _flat, _forward

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.guidance.softpag import SoftPAGConfig, SoftPAGPatch, branch_options
from dit_accel.accel.host import RUN_KEY, AccelHost

SIGMA = 0.75


def _cond_rows(value, batch: int):
    if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch:
        return value[:1]
    if isinstance(value, (list, tuple)):
        return type(value)(_cond_rows(v, batch) for v in value)
    return value


def _run(model, inputs, config: SoftPAGConfig):
    """One CFG call (cond row 0, uncond row 1) then the branch call on the cond row, in one dit-accel run."""
    adapter = adapter_for(model)
    host = AccelHost(adapter, (SoftPAGPatch(config),))
    installed = {}
    host.install(installed, model)
    run = host.start_run()
    patches = adapter.object_patches(model)
    x = inputs["x"]
    batch = (x[0] if isinstance(x, (list, tuple)) else x).shape[0]
    cond_inputs = {k: _cond_rows(v, batch) for k, v in inputs.items()}
    with torch.no_grad():
        main = _forward(model, inputs, SIGMA, {**installed, RUN_KEY: run}, patches)
        branch = _forward(model, cond_inputs, SIGMA, branch_options(
            {**installed, RUN_KEY: run, "cond_or_uncond": [0], "uuids": ["c"]}), patches)
    host.end_run(run)
    return main, branch, cond_inputs, run


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_softpag_branch_on_every_family(name, comfy_root):
    model, inputs, blocks = _build(name)
    last = sum(blocks.values()) - 1
    config = SoftPAGConfig(heads=((last, None),), alpha=1.0)
    main, branch, cond_inputs, run = _run(model, inputs, config)
    with torch.no_grad():
        plain = _forward(model, inputs, SIGMA, {})
        plain_cond = _forward(model, cond_inputs, SIGMA, {})
    torch.testing.assert_close(_flat(main), _flat(plain), rtol=0, atol=1e-6)  # the main pass is untouched
    assert (_flat(branch) - _flat(plain_cond)).abs().max() > 1e-5  # the perturbation acts
    total = sum(blocks.values())
    assert run.ledger.blocks_run == total + 1  # the branch ran only the last layer
    _, full_branch, _, full_run = _run(model, inputs, SoftPAGConfig(heads=((last, None),), alpha=1.0,
                                                                    reuse_prefix=False))
    assert full_run.ledger.blocks_run == 2 * total
    torch.testing.assert_close(_flat(branch), _flat(full_branch), rtol=1e-4, atol=1e-5)
