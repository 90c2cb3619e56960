"""The boundary's allocation scope: pauses the model compiler's capture once however deeply it nests, resumes it on
errors too, and does nothing where the compiler does not exist."""
from __future__ import annotations

import contextlib

import pytest

from dit_accel.nodes.comfy import allocation


class FakePause:
    """comfy.model_prefetch.pause_malloc_graph's shape: a context manager factory that flips a flag."""

    def __init__(self):
        self.paused, self.pauses = False, 0

    @contextlib.contextmanager
    def __call__(self):
        assert not self.paused, "paused twice: the inner resume would re-enable capture inside the outer scope"
        self.paused, self.pauses = True, self.pauses + 1
        try:
            yield
        finally:
            self.paused = False


@pytest.fixture
def pause(monkeypatch):
    fake = FakePause()
    monkeypatch.setattr(allocation, "_pause_malloc_graph", lambda: fake)
    return fake


def test_nested_scopes_pause_once_and_resume_at_the_outermost(pause):
    with allocation.persistent_allocation():
        with allocation.persistent_allocation():
            assert pause.paused
        assert pause.paused  # the inner exit must not resume capture
    assert not pause.paused and pause.pauses == 1


def test_an_error_inside_resumes_capture(pause):
    with pytest.raises(RuntimeError):
        with allocation.persistent_allocation():
            raise RuntimeError("boom")
    assert not pause.paused
    with allocation.persistent_allocation():
        assert pause.paused and pause.pauses == 2  # the depth count was restored too


def test_without_the_compiler_the_scope_is_plain(monkeypatch):
    monkeypatch.setattr(allocation, "_pause_malloc_graph", lambda: None)
    assert not allocation.compiler_present()
    with allocation.persistent_allocation():
        pass


def test_graph_breaks_are_read_from_comfyuis_log_line():
    log = ("Comfy model compiler graph breaks: 3, rogues: 0\nprompt done\n"
           "INFO Comfy model compiler graph breaks: 0, rogues: 1\n")
    assert allocation.graph_breaks(log) == 0  # the last run's count
    assert allocation.graph_breaks("no compiler here") is None
