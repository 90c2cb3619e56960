"""One pool of gloo worker processes shared by the parallel tests (starting one costs seconds); a test that kills its
workers leaves a dead pool behind, and the next test gets a fresh one."""
import pytest
import torch

from dit_accel.accel.parallel.pool import PoolConfig, WorkerPool

_POOL: list[WorkerPool] = []


def _shared_pool(timeout_s: float = 30.0) -> WorkerPool:
    if _POOL and _POOL[0].alive and _POOL[0].config.timeout_s == timeout_s:
        return _POOL[0]
    if _POOL:
        _POOL.pop().shutdown()
    _POOL.append(WorkerPool(PoolConfig(world_size=2, device="cpu", timeout_s=timeout_s, threads=1)))
    return _POOL[0]


@pytest.fixture
def pool() -> WorkerPool:
    return _shared_pool()


@pytest.fixture(name="shared_pool")
def shared_pool_fixture():
    """`shared_pool(timeout_s=...)`: the shared pool, restarted when its timeout differs."""
    return _shared_pool


@pytest.fixture
def no_shared_pool():
    """For a test that starts a pool of its own (one process group per process): the shared one makes way, and the
    next test that asks for it starts a fresh one."""
    while _POOL:
        _POOL.pop().shutdown()


@pytest.fixture(scope="session", autouse=True)
def _stop_pool():
    yield
    while _POOL:
        _POOL.pop().shutdown()


@pytest.fixture
def make_wan():
    return wan_model


def wan_model(dim: int = 256, layers: int = 2) -> torch.nn.Module:
    from dit_accel.reference.wan_dit import WanConfig, WanDiT
    torch.manual_seed(0)
    model = WanDiT(WanConfig(dim=dim, ffn_dim=2 * dim, num_layers=layers, text_dim=64)).eval().requires_grad_(False)
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    return model
