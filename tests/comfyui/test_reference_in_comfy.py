"""The bundled reference model inside real ComfyUI: loader, sampler with CFG, our hooks, our pure-torch twin."""
from __future__ import annotations

import pytest
import torch

from dit_accel.accel.context import StepContext
from dit_accel.accel.patch import DiTPatch
from dit_accel.reference.conditioning import UNCONDITIONAL, label_context


class Probe(DiTPatch):
    """Does nothing but record what it sees."""

    name = "probe"

    def __init__(self):
        self.blocks: list[tuple[int, int]] = []
        self.contexts: list[StepContext] = []
        self.attention: list[tuple[str, int, int, int | None]] = []
        self.runs_started = self.runs_ended = 0

    def on_run_start(self, run):
        self.runs_started += 1

    def on_run_end(self, run):
        self.runs_ended += 1
        return None

    def before_blocks(self, run, ctx, call):
        self.contexts.append(ctx)

    def around_block(self, run, ctx, call, run_block):
        self.blocks.append((ctx.step, call.index))
        return run_block(call.args)

    def around_attention(self, run, ctx, call, run_attention):
        self.attention.append((call.kind, call.heads, call.head_dim, call.block_index))
        return run_attention(call)


def comfy_sample(model, seed=3, steps=6, cfg=4.0, digits=(3, 7)):
    import nodes
    positive = [[label_context(list(digits)), {}]]
    negative = [[label_context([UNCONDITIONAL] * len(digits)), {}]]
    latent = {"samples": torch.zeros(len(digits), 16, 1, 32, 32)}
    return nodes.common_ksampler(model, seed, steps, cfg, "euler", "simple", positive, negative, latent)[0]["samples"]


def test_comfy_loads_reference_as_wan21(reference_patcher, comfy_version):
    assert type(reference_patcher.model).__name__ == "WAN21"
    dm = reference_patcher.model.diffusion_model
    assert type(dm).__name__ == "WanModel" and len(dm.blocks) == 8 and dm.num_heads == 2
    assert reference_patcher.model.model_sampling.shift == 8.0


def test_noop_patch_is_bit_identical_and_sees_every_block(reference_patcher):
    from dit_accel.nodes.comfy.patcher import apply_patch

    steps = 6
    plain = comfy_sample(reference_patcher, steps=steps)
    probe = Probe()
    patched = apply_patch(reference_patcher, probe)
    out = comfy_sample(patched, steps=steps)
    assert torch.equal(plain, out), "a patch that does nothing changed ComfyUI's output"
    assert probe.runs_started == probe.runs_ended == 1
    # CFG > 1 batches cond and uncond: one model call per step, every block seen on every step, in order.
    assert probe.blocks == [(s, i) for s in range(steps) for i in range(8)]
    assert [c.step for c in probe.contexts] == list(range(steps))
    assert all(c.total_steps == steps for c in probe.contexts)
    kinds = [sorted(s.kind for s in c.streams) for c in probe.contexts]
    assert kinds == [["cond", "uncond"]] * steps
    first = probe.contexts[0]
    assert {s.rows.stop - s.rows.start for s in first.streams} == {2} and first.batch_size == 4
    assert first.percent == 0.0 and probe.contexts[-1].percent == pytest.approx((steps - 1) / steps)
    # Two attention calls per block (self, cross), each with Wan's 128-wide heads visible.
    assert probe.attention[:2] == [("self", 2, 128, 0), ("cross", 2, 128, 0)]
    assert len(probe.attention) == steps * 8 * 2
    # The patched MODEL holds no run state afterwards, and the original MODEL was not touched.
    from dit_accel.accel.host import RUN_KEY
    assert RUN_KEY not in patched.model_options["transformer_options"]
    assert "dit_accel" not in reference_patcher.model_options.get("transformer_options", {})


def test_patch_chains_onto_existing_block_replacement(reference_patcher):
    """A block replacement another node installed (here: skip block 3, like Skip Layer Guidance) keeps working."""
    from dit_accel.nodes.comfy.patcher import apply_patch

    skipped = reference_patcher.clone()
    skipped.set_model_patch_replace(lambda args, extra: {"img": args["img"]}, "dit", "double_block", 3)
    expected = comfy_sample(skipped, steps=3)
    out = comfy_sample(apply_patch(skipped, Probe()), steps=3)
    assert torch.equal(expected, out)
    assert not torch.equal(expected, comfy_sample(reference_patcher, steps=3))


def test_two_dit_accel_nodes_share_one_host(reference_patcher):
    from dit_accel.nodes.comfy.patcher import apply_patch

    first, second = Probe(), Probe()
    second.name = "probe-2"  # one node per method and model: two of the same name are refused
    model = apply_patch(apply_patch(reference_patcher, first), second)
    comfy_sample(model, steps=2)
    assert len(first.blocks) == len(second.blocks) == 16  # each patch ran once per block, not twice


def test_interrupted_run_is_closed(reference_patcher):
    from dit_accel.nodes.comfy.patcher import apply_patch

    class Boom(Probe):
        def around_block(self, run, ctx, call, run_block):
            if ctx.step == 1 and call.index == 4:
                raise RuntimeError("interrupted")
            return super().around_block(run, ctx, call, run_block)

    boom = Boom()
    with pytest.raises(RuntimeError, match="interrupted"):
        comfy_sample(apply_patch(reference_patcher, boom), steps=3)
    assert boom.runs_started == boom.runs_ended == 1


def test_reference_implementation_matches_comfy_wanmodel(reference_patcher):
    """Our pure-torch WanDiT and ComfyUI's WanModel give the same output for the same weights."""
    from dit_accel.reference.assets import load_model

    ours = load_model(dtype=torch.float32)
    theirs = reference_patcher.model.diffusion_model
    assert theirs.dtype in (torch.float32, None) or next(theirs.parameters()).dtype == torch.float32
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 16, 1, 32, 32, generator=gen)
    t = torch.tensor([999.0, 500.0, 20.0])
    context = label_context([1, 5, UNCONDITIONAL])
    with torch.no_grad():
        expected = theirs(x, t, context, transformer_options={})
        got = ours(x, t, context)
    assert got.shape == expected.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
