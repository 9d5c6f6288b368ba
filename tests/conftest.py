"""Test setup: without a GPU, Triton kernels run under the interpreter on CPU tensors."""

import os

import torch

if not torch.cuda.is_available():
    # must be set before any @triton.jit function is defined (i.e. before ramac.kernels is imported)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture
def device():
    """Where kernel tests run: the GPU if present, else the CPU (interpreted Triton)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
