"""The host on our pure-torch Wan model: hooks see everything, a do-nothing patch changes nothing, chaining works."""
import pytest
import torch

from dit_accel.accel.adapters.registry import UnsupportedModelError, adapter_for, supported_families
from dit_accel.accel.host import AccelHost
from dit_accel.accel.patch import DiTPatch
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.conditioning import UNCONDITIONAL, label_context
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule


class Recorder(DiTPatch):
    name = "recorder"

    def __init__(self, log, tag):
        self.log, self.tag = log, tag

    def before_blocks(self, run, ctx, call):
        self.log.append((self.tag, "before", ctx.step))

    def around_block(self, run, ctx, call, run_block):
        self.log.append((self.tag, "enter", call.index))
        out = run_block(call.args)
        self.log.append((self.tag, "exit", call.index))
        return out

    def after_blocks(self, run, ctx, call, out):
        self.log.append((self.tag, "after", ctx.step))
        return out

    def around_attention(self, run, ctx, call, run_attention):
        self.log.append((self.tag, call.kind, call.block_index, call.heads, call.head_dim))
        return run_attention(call)


def _sample(model_fn, steps=3, cfg=4.0):
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 16, 1, 8, 8, generator=gen)
    return sample_euler_cfg(model_fn, noise, label_context([1, 2]), label_context([UNCONDITIONAL] * 2),
                            simple_schedule(steps), cfg)


def test_noop_patches_are_bit_identical_and_see_every_block(tiny_wan):
    plain = _sample(lambda x, t, c, o: tiny_wan(x, t, c, o))
    log = []
    host = AccelHost(adapter_for(tiny_wan), (Recorder(log, "a"),))
    with accelerated(host, tiny_wan) as (fn, run, _):
        out = _sample(fn)
    assert torch.equal(plain, out)
    enters = [e[2] for e in log if e[1] == "enter"]
    assert enters == [0, 1, 2] * 3
    assert [e[2] for e in log if e[1] == "before"] == [0, 1, 2]
    assert [e[2] for e in log if e[1] == "after"] == [0, 1, 2]
    attn = [e for e in log if e[1] in ("self", "cross")]
    assert attn[:2] == [("a", "self", 0, 2, 128), ("a", "cross", 0, 2, 128)]
    assert run.ledger.blocks_run == run.ledger.blocks_total == 9 and run.ledger.model_calls == 3


def test_first_patch_added_is_outermost(tiny_wan):
    log = []
    inner = Recorder(log, "inner")
    inner.name = "recorder-inner"
    host = AccelHost(adapter_for(tiny_wan)).with_patch(Recorder(log, "outer")).with_patch(inner)
    with accelerated(host, tiny_wan) as (fn, _, _):
        _sample(fn, steps=1)
    first_block = [(e[0], e[1]) for e in log if e[1] in ("enter", "exit") and e[2] == 0]
    assert first_block == [("outer", "enter"), ("inner", "enter"), ("inner", "exit"), ("outer", "exit")]


def test_a_patch_can_replace_a_block_and_the_ledger_counts_it(tiny_wan):
    class SkipMiddle(DiTPatch):
        name = "skip"

        def around_block(self, run, ctx, call, run_block):
            return {"img": call.hidden} if call.index == 1 else run_block(call.args)

    host = AccelHost(adapter_for(tiny_wan), (SkipMiddle(),))
    with accelerated(host, tiny_wan) as (fn, run, _):
        out = _sample(fn, steps=2)
    assert run.ledger.blocks_total == 6 and run.ledger.blocks_run == 4
    assert run.ledger.block_speedup == pytest.approx(1.5)
    assert not torch.equal(out, _sample(lambda x, t, c, o: tiny_wan(x, t, c, o), steps=2))


def test_the_ledgers_count_what_was_let_run_row_by_row(tiny_wan):
    """The host counts compute where it is let through, for the whole run and for a patch that keeps a ledger of its
    own: a block run on two row sets is one evaluation of every row, a block run on one row counts that row."""
    from dit_accel.accel.caching.block_cache import run_rows

    class Split(DiTPatch):
        name = "split"
        keeps_ledger = True
        rows = 0

        def around_block(self, run, ctx, call, run_block):
            batch = Split.rows = call.hidden.shape[0]
            if call.index == 0:  # the first row, then the rest
                first, rest = run_rows(run_block, call, [0]), run_rows(run_block, call, list(range(1, batch)))
                return {"img": torch.cat([first["img"][:1], rest["img"][1:]])}
            if call.index == 1:
                return run_rows(run_block, call, [0])
            return {"img": call.hidden}

    host = AccelHost(adapter_for(tiny_wan), (Split(),))
    with accelerated(host, tiny_wan) as (fn, run, _):
        _sample(fn, steps=2)
    calls, rows = run.ledger.model_calls, Split.rows
    assert calls == 2 and rows > 1
    for ledger in (run.ledger, run.ledger_of("split")):
        assert (ledger.blocks_run, ledger.blocks_total) == (2 * calls, 3 * calls)
        assert (ledger.row_blocks_run, ledger.row_blocks_total) == ((rows + 1) * calls, 3 * rows * calls)
    assert run.ledger_of("split").row_block_speedup == pytest.approx(3 * rows / (rows + 1))


def test_chains_onto_existing_block_replacement_and_attention_override(tiny_wan):
    calls = {"block": 0, "attn": 0}

    def other_block(args, extra):
        calls["block"] += 1
        return extra["original_block"](args)

    def other_attention(func, *args, **kwargs):
        calls["attn"] += 1
        return func(*args, **kwargs)

    to = {"patches_replace": {"dit": {("double_block", 1): other_block}}, "optimized_attention_override": other_attention}
    expected = _sample(lambda x, t, c, o: tiny_wan(x, t, c, {**to, **o}), steps=1)
    calls.update(block=0, attn=0)
    host = AccelHost(adapter_for(tiny_wan), (Recorder([], "r"),))
    host.install(to, tiny_wan)
    run = host.start_run()
    from dit_accel.accel.host import RUN_KEY

    def fn(x, t, c, o):
        merged = {**to, **o, RUN_KEY: run}
        host.begin_call(merged, x)
        return tiny_wan(x, t, c, merged)

    out = _sample(fn, steps=1)
    host.end_run(run)
    assert torch.equal(out, expected)
    assert calls == {"block": 1, "attn": 6}


def test_run_is_closed_when_sampling_raises(tiny_wan):
    class Fails(DiTPatch):
        name = "fails"
        ended = False

        def around_block(self, run, ctx, call, run_block):
            raise RuntimeError("boom")

        def on_run_end(self, run):
            Fails.ended = True
            return "ended"

    host = AccelHost(adapter_for(tiny_wan), (Fails(),))
    with pytest.raises(RuntimeError, match="boom"):
        with accelerated(host, tiny_wan) as (fn, run, summary):
            _sample(fn)
    assert Fails.ended and run.closed and summary == ["ended"]


def test_unknown_model_gets_an_error_naming_the_supported_families():
    with pytest.raises(UnsupportedModelError, match="Supported families: .*wan") as err:
        adapter_for(torch.nn.Linear(2, 2))
    assert "'Linear'" in str(err.value)
    assert "wan" in supported_families()


def test_a_broken_family_disables_itself_with_one_warning(monkeypatch, caplog):
    from dit_accel.accel.adapters import registry

    monkeypatch.setattr(registry, "BUILTIN_FAMILY_MODULES", ("wan", "no_such_family"))
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_DISABLED", {})
    with caplog.at_level("WARNING", logger="dit_accel"):
        assert "wan" in registry.supported_families()
    warnings = [r for r in caplog.records if "no_such_family" in r.getMessage()]
    assert len(warnings) == 1 and "disabled" in warnings[0].getMessage()
    with pytest.raises(UnsupportedModelError, match="no_such_family is disabled"):
        adapter_for(torch.nn.Linear(2, 2))


def test_a_family_whose_hooks_changed_disables_itself_once(monkeypatch, caplog):
    """A ComfyUI whose Wan forward no longer consults patches_replace: one warning, a clear error, pack imports."""
    from dit_accel.accel.adapters import registry

    monkeypatch.setattr(registry, "_ADAPTERS", dict(registry._ADAPTERS))
    monkeypatch.setattr(registry, "_DISABLED", {})

    class WanModel(torch.nn.Module):  # same class name as ComfyUI's, forward without the block hook
        def forward(self, x):
            return x

    with caplog.at_level("WARNING", logger="dit_accel"):
        for _ in range(2):
            with pytest.raises(UnsupportedModelError, match=r"wan is disabled \(WanModel no longer consults"):
                adapter_for(WanModel())
    assert len([r for r in caplog.records if "disabled" in r.getMessage()]) == 1
    assert "wan" not in registry.supported_families()
    import importlib

    import dit_accel
    importlib.reload(dit_accel)  # the pack still imports


def test_the_same_method_twice_on_one_model_is_a_clear_error(tiny_wan):
    host = AccelHost(adapter_for(tiny_wan)).with_patch(Recorder([], "a"))
    with pytest.raises(ValueError, match="already has a dit-accel 'recorder' node upstream"):
        host.with_patch(Recorder([], "b"))
