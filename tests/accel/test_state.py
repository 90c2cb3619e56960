import torch

from dit_accel.accel.state import RunState, StreamState


class Counter(StreamState):
    def __init__(self):
        self.n = 0
        self.resets = 0

    def reset(self):
        self.n = 0
        self.resets += 1


def test_streams_are_kept_apart():
    run = RunState()
    x = torch.zeros(2, 4)
    run.stream_state("p", "cond", x, Counter).n += 1
    assert run.stream_state("p", "uncond", x, Counter).n == 0
    assert run.stream_state("other", "cond", x, Counter).n == 0
    assert run.stream_state("p", "cond", x, Counter).n == 1


def test_state_resets_when_shape_dtype_or_device_change():
    run = RunState()
    state = run.stream_state("p", "cond", torch.zeros(2, 4), Counter)
    state.n = 5
    assert run.stream_state("p", "cond", torch.zeros(2, 4), Counter).n == 5
    assert run.stream_state("p", "cond", torch.zeros(3, 4), Counter).n == 0  # new batch size
    state.n = 5
    assert run.stream_state("p", "cond", torch.zeros(3, 4, dtype=torch.float16), Counter).n == 0
    assert state.resets == 2


def test_close_resets_and_forgets_everything():
    run = RunState()
    state = run.stream_state("p", "cond", torch.zeros(1), Counter)
    state.n = 3
    run.close()
    assert run.closed and state.n == 0 and not run.states


class _Scope:
    """An allocation scope that records how deep it is entered, and what was created at which depth."""

    def __init__(self):
        self.depth, self.entered = 0, 0

    def __call__(self):
        scope = self

        class _Ctx:
            def __enter__(self):
                scope.depth += 1
                scope.entered += 1

            def __exit__(self, *exc):
                scope.depth -= 1

        return _Ctx()


def test_per_run_state_is_made_inside_the_allocation_scope():
    scope = _Scope()
    run = RunState(allocation_scope=scope)
    depths = []

    def factory():
        depths.append(scope.depth)
        return Counter()

    run.stream_state("p", "cond", torch.zeros(2), factory)
    run.stream_state("p", "cond", torch.zeros(2), factory)  # same signature: no new allocation, no scope
    run.data("p", lambda: depths.append(scope.depth) or {})
    assert depths == [1, 1] and scope.entered == 2
    state = run.stream_state("p", "cond", torch.zeros(3), factory)  # new shape: reset inside the scope
    assert state.resets == 1 and scope.entered == 3
    kept = run.keep(torch.ones(2))
    assert torch.equal(kept, torch.ones(2)) and scope.entered == 4 and scope.depth == 0


def test_plain_runs_allocate_plainly():
    run = RunState()
    assert run.keep(torch.arange(3)).tolist() == [0, 1, 2]
