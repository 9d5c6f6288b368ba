"""Benchmarks need a CUDA GPU; run them with `pytest bench --benchmark-enable --benchmark-json=FILE`."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="benchmarks time GPU kernels; no CUDA device here")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device():
    return torch.device("cuda")


@pytest.fixture
def record_device(benchmark):
    benchmark.extra_info["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    benchmark.extra_info["torch"] = torch.__version__
    return benchmark


def synced(fn):
    """Time what the GPU does, not only the launch: synchronise inside the timed call."""

    def run():
        fn()
        torch.cuda.synchronize()

    return run
