"""Failures end a multi-GPU run with a clear error within the collective timeout, never a hang: a killed worker, a
stuck one, an interrupted run (the pool survives it), fewer devices than asked."""
import os
import signal
import time

import pytest
import torch

from dit_accel.accel.adapters.registry import adapter_for
from dit_accel.accel.host import AccelHost
from dit_accel.accel.parallel.comm import ParallelError
from dit_accel.accel.parallel.pool import PoolConfig, check_devices
from dit_accel.accel.parallel.run import parallel_accelerated, with_sequence_parallel
from dit_accel.accel.parallel.ulysses import SequenceParallelConfig
from dit_accel.accel.standalone import accelerated
from dit_accel.reference.sampling import sample_euler_cfg, simple_schedule


class Interrupted(Exception):
    """Stands in for ComfyUI's InterruptProcessingException, raised between steps by the sampler's callback."""


def _run(model, pool, steps=3, callback=None):
    host = with_sequence_parallel(AccelHost(adapter_for(model)), SequenceParallelConfig(2))
    g = torch.Generator().manual_seed(2)
    noise, cond = torch.randn(1, 16, 1, 8, 8, generator=g), torch.randn(1, 3, 64, generator=g)
    with parallel_accelerated(host, model, pool) as (fn, _, _):
        return sample_euler_cfg(fn, noise, cond, None, simple_schedule(steps), 1.0, callback=callback)


def test_interrupt_ends_the_run_and_keeps_the_pool(make_wan, shared_pool):
    pool, model = shared_pool(), make_wan()

    def interrupt(step):
        if step == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        _run(model, pool, callback=interrupt)
    assert pool.alive, "an interrupt between model calls must not cost the workers"
    host = AccelHost(adapter_for(model))
    g = torch.Generator().manual_seed(2)
    noise, cond = torch.randn(1, 16, 1, 8, 8, generator=g), torch.randn(1, 3, 64, generator=g)
    with accelerated(host, model) as (fn, _, _):
        single = sample_euler_cfg(fn, noise, cond, None, simple_schedule(3), 1.0)
    assert torch.allclose(_run(model, pool), single, atol=1e-5)


def test_killed_worker_fails_the_run_clearly(make_wan, shared_pool):
    pool, model = shared_pool(), make_wan()

    def kill(step):
        if step == 0:
            pool.procs[0].kill()
            pool.procs[0].wait()

    start = time.monotonic()
    with pytest.raises(ParallelError, match="worker rank 1 exited with code"):
        _run(model, pool, callback=kill)
    assert time.monotonic() - start < pool.config.timeout_s
    assert not pool.alive


def test_stuck_worker_times_out(make_wan, shared_pool):
    pool, model = shared_pool(timeout_s=4.0), make_wan()

    def freeze(step):
        if step == 0:
            os.kill(pool.procs[0].pid, signal.SIGSTOP)

    start = time.monotonic()
    try:
        with pytest.raises(ParallelError, match="did not answer within 4 s"):
            _run(model, pool, callback=freeze)
    finally:
        for proc in pool.procs:
            os.kill(proc.pid, signal.SIGCONT)
    assert time.monotonic() - start < 4.0 * 2 + 10  # the timeout, plus stopping the pool
    assert not pool.alive


def test_fewer_devices_than_asked_is_refused():
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ParallelError, match=f"asks for {visible + 1} CUDA devices .* torch sees {visible}"):
        check_devices(PoolConfig(world_size=visible + 1, device="cuda"))
