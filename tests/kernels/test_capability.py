"""One capability probe for every kernel package, and one warn-once for the pack."""
from __future__ import annotations

import logging

import pytest
import torch

from dit_accel.kernels import capability
from dit_accel.kernels.logs import forget_warnings, warn_once


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("0", False), ("", False)])
def test_interpreting_reads_triton_interpret(monkeypatch, value, expected):
    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert capability.interpreting() is expected


def test_triton_is_available_only_with_something_to_run_on(monkeypatch):
    monkeypatch.setattr(capability, "triton_importable", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not capability.triton_available()  # installed, but neither a GPU nor the interpreter
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert capability.triton_available()
    monkeypatch.setattr(capability, "triton_importable", lambda: False)
    assert not capability.triton_available()


def test_kernel_packages_export_the_shared_probe():
    from dit_accel.kernels import block_sparse, quant
    assert block_sparse.triton_available is capability.triton_available
    assert quant.triton_available is capability.triton_available


def test_warn_once_says_each_key_once(caplog):
    forget_warnings("test-key")
    with caplog.at_level(logging.WARNING, logger="dit_accel"):
        assert warn_once("test-key:a", "first %s", "a")
        assert not warn_once("test-key:a", "again %s", "a")
        assert warn_once("test-key:b", "first %s", "b")
    assert [r.getMessage() for r in caplog.records] == ["first a", "first b"]
    forget_warnings("test-key:a")
    assert warn_once("test-key:a", "once more")


def test_warn_once_in_a_narrower_scope(caplog):
    run_keys: set[str] = set()
    with caplog.at_level(logging.WARNING, logger="dit_accel"):
        assert warn_once("test-scope", "per run", said=run_keys)
        assert not warn_once("test-scope", "per run", said=run_keys)
        assert warn_once("test-scope", "another run", said=set())
    assert run_keys == {"test-scope"} and len(caplog.records) == 2
    assert warn_once("test-scope", "the process's own set is separate")
    forget_warnings("test-scope")
