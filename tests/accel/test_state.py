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
