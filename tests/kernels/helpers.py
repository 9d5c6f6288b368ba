"""Shared helpers for kernel-vs-reference tests."""

import torch

# (atol, rtol) per input dtype: the kernels compute in fp32 whatever the input dtype
TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2)}


def grads(fn, inputs, grad_out):
    """Value of fn(*inputs) and the gradients of <out, grad_out> w.r.t. inputs that require grad."""
    out = fn(*inputs)
    wrt = [x for x in inputs if torch.is_tensor(x) and x.requires_grad]
    gs = torch.autograd.grad(out, wrt, grad_out)
    return out.detach(), [g.float() for g in gs]


def assert_same(kernel_fn, ref_fn, inputs, grad_out, dtype=torch.float32):
    atol, rtol = TOL[dtype]
    out_k, g_k = grads(kernel_fn, inputs, grad_out)
    out_r, g_r = grads(ref_fn, inputs, grad_out)
    torch.testing.assert_close(out_k.float(), out_r.float(), atol=atol, rtol=rtol)
    for a, b in zip(g_k, g_r):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
