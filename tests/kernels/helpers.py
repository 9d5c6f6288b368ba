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


# Samplers with tensor-core inputs (chain and student): in the interpreter (CPU) tf32 dots run in
# fp32; on the GPU the floor of the rule below (tf32 keeps 10 mantissa bits, bf16 7: ~1e-3 and ~4e-3
# relative per product, up to ~1e-2 / 2e-2 on actions in [-1, 1] through several layers)
SAMPLER_TOL = {"fp32": 1e-5, "tf32": 1e-5, "bf16": 3e-2}
GPU_FLOOR = {"tf32": 1e-2, "bf16": 2e-2}


def precision_atol(ref, precision: str, device: torch.device, want: torch.Tensor, cpu_lowp: bool = False) -> float:
    """Absolute tolerance of a kernel that computes ref() with `precision` tensor-core inputs.

    GPU: twice the error torch itself makes running ref() at that precision (tf32 matmuls, bf16
    autocast; flash-attention's rule), at least GPU_FLOOR. CPU (interpreter): SAMPLER_TOL, or with
    cpu_lowp and bf16 twice torch's own bf16 error where that is larger."""
    if precision == "fp32" or (device.type != "cuda" and not (cpu_lowp and precision == "bf16")):
        return SAMPLER_TOL[precision]
    if precision == "tf32":
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            lowp = ref()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
    else:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            lowp = ref().float()
    floor = GPU_FLOOR[precision] if device.type == "cuda" else SAMPLER_TOL[precision]
    return max(2 * (lowp - want).abs().max().item(), floor)


def compiled_graphs(fn, *args):
    """(fn(*args), the code of each graph Dynamo traced): fn compiled (fullgraph) with a backend that
    keeps each graph's code and runs it eagerly; Dynamo's caches reset before and after."""
    seen = []

    def backend(gm, example_inputs):
        seen.append(gm.code)
        return gm.forward

    torch._dynamo.reset()
    out = torch.compile(fn, backend=backend, fullgraph=True)(*args)
    torch._dynamo.reset()
    return out, seen
