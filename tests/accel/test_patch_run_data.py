"""A patch's run-wide data is declared once (`run_type`) and read the same way on every patch (`run_data`)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from dit_accel.accel.patch import DiTPatch
from dit_accel.accel.state import RunState


@dataclass
class Counts:
    calls: int = 0


class Counting(DiTPatch):
    name = "counting"
    run_type = Counts


def test_run_data_is_one_object_per_run():
    patch, first, second = Counting(), RunState(), RunState()
    patch.run_data(first).calls += 2
    assert patch.run_data(first).calls == 2
    assert patch.run_data(second).calls == 0  # a new run starts fresh
    first.close()
    assert patch.run_data(first).calls == 0  # ... and a closed run dropped its data


def test_a_patch_without_run_type_says_so():
    with pytest.raises(TypeError, match="run_type"):
        DiTPatch().run_data(RunState())


def test_guidance_and_sparse_patches_declare_their_run_data():
    from dit_accel.accel.guidance.softpag import SoftPAGConfig, SoftPAGPatch, SoftPAGRun
    from dit_accel.accel.sparse import SparseAttentionConfig, SparseAttentionPatch
    from dit_accel.accel.sparse.patch import SparseRun
    run = RunState()
    softpag, sparse = SoftPAGPatch(SoftPAGConfig(heads=((0, 0),))), SparseAttentionPatch(SparseAttentionConfig())
    assert isinstance(softpag.run_data(run), SoftPAGRun) and isinstance(sparse.run_data(run), SparseRun)
    assert softpag.run_data(run) is softpag.run_data(run)


def test_sequence_parallel_declares_its_run_data(tiny_wan):
    from dit_accel.accel.adapters.registry import adapter_for
    from dit_accel.accel.parallel.ulysses import SequenceParallelConfig, SequenceParallelPatch, _CallSplit
    patch, run = SequenceParallelPatch(SequenceParallelConfig(2), adapter_for(tiny_wan).sequence_layout), RunState()
    assert isinstance(patch.run_data(run), _CallSplit) and patch.run_data(run) is run.patch_data[patch.name]
