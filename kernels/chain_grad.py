"""The differentiable denoising chain of the actor's risk term (SPEC 2.3, 5): all T steps of the
Diffusion-QL denoiser and the posterior step, forward and backward, in two launches plus one GEMM
per weight.

    a1 = [x_t, temb(t), s] W1^T + b1,  a2 = mish(a1) W2^T + b2,  a3 = mish(a2) W3^T + b3
    eps = mish(a3) W4^T + b4,  x_{t-1} = mean1 clamp(recip x_t - recipm1 eps) + mean2 x_t + sigma z_t

Forward (`_chain_fwd_kernel`): one program per block of states runs the whole chain, as the
forward-only sampler does, and also writes what the backward needs: each step's input x_t, the
pre-activations a1, a2, a3 and eps, and the chain's last value before its clamp. Backward
(`_chain_bwd_kernel`): one program per block walks the steps in reverse and writes each step's
deltas (d eps, d a1, d a2, d a3); x's gradient stays in registers from step to step. The weight
gradients are then one matrix product per weight over all T x B rows (dW2 = mish(A1)^T dA2, ...)
and sums for the biases, in PyTorch. The reference path (`denoise_chain_ref`) is the same chain
in plain PyTorch, differentiated by autograd: it equals `Diffusion.sample` with the reference
posterior step.

The time embedding enters layer 1 through c_time = temb W1[:, A:A+td]^T + b1, a (T, H) table
computed differentiably outside the kernels, so gradients reach the time MLP and b1 by autograd.

Seeds stacked (ramac.train.stacked, under torch.func.vmap): `denoise_chain_triton` has a vmap rule
(kernels._dispatch.fold_seeds) that runs both kernels once for all K seeds, a second grid axis
picking each program's seed (STACKED: every tensor with a leading seed dimension), and the weight
gradients as batched products. Diffusion.sample takes it under vmap unless RAMAC_FUSED_CHAIN_STACKED=0
(then vmap batches the per-step chain).

Compiled code (torch.compile) leaves the per-step chain to Inductor, unless RAMAC_CHAIN_UNDER_COMPILE=1:
then the same kernels run as the custom operators ramac::denoise_chain and its backward, which
Inductor keeps whole inside the graph (with a vmap rule for stacked seeds).
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F

from ._dispatch import HAS_TRITON, env_switch, fold_seeds, get_backend, is_vmapped, seeds_first, sm_count, use_triton
from .sampler import _pad


PRECISIONS = ("tf32", "ieee", "bf16")  # the dots' inputs: fp32 rounded to tf32, exact fp32, or bf16
# rows per program of the forward (None: _forward_block's choice); 64 made an illegal memory access in
# tf32 at hidden 256 on an H200 (triton 3.6, bench/results/chain-grad-blocks-H200.json), so it is refused
BLOCKS = (None, 16, 32)


def _forward_block(B: int, device, seeds: int = 1) -> int:
    """16 rows per program while that fits one wave of programs on the SMs (seeds x cdiv(B, 16)
    programs), else 32 (H200, forward + backward, bf16: 16 rows 11 % faster at 256 and 1,024, where
    32 leave most SMs idle; 32 rows 7 % faster at 4,096, where 16 need two waves)."""
    return 16 if B <= 16 or seeds * -(-B // 16) <= sm_count(device) else 32


def _check(state, noise, w1, w2, t_emb, coefs, stacked: bool = False):
    """Shapes; stacked: every tensor (coefs a tensor) with a leading seed dimension K."""
    lead = 1 if stacked else 0
    T = coefs.shape[lead] if stacked else len(coefs)
    H = w2.shape[lead]
    K = tuple(state.shape[:lead])
    if (state.dim() != 2 + lead or noise.dim() != 3 + lead or noise.shape[lead] != T + 1
            or noise.shape[lead + 1] != state.shape[lead] or tuple(noise.shape[:lead]) != K):
        raise ValueError(f"state must be {K + ('B', 'S')} and noise {K + ('T + 1', 'B', 'A')} with T = {T}, got "
                         f"{tuple(state.shape)} and {tuple(noise.shape)}")
    A, S = noise.shape[-1], state.shape[-1]
    if (t_emb.dim() != 2 + lead or t_emb.shape[lead] != T
            or tuple(w1.shape) != K + (H, A + t_emb.shape[-1] + S)):
        raise ValueError(f"w1 must be (H, A + t_dim + S) = ({H}, {A + t_emb.shape[-1] + S}) and t_emb (T, t_dim), "
                         f"got {tuple(w1.shape)} and {tuple(t_emb.shape)}")


def denoise_chain_ref(state, noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs, max_action: float):
    """Plain-PyTorch chain (autograd differentiates it). state (B, S); noise (T + 1, B, A) with
    noise[T] = x_T; w1..b4 the denoiser's linear layers (nn.Linear layout); t_emb (T, t_dim) the
    time MLP's output for steps 0..T-1; coefs: per step (recip, recipm1, mean1, mean2, sigma)."""
    _check(state, noise, w1, w2, t_emb, coefs)
    B, T = state.shape[0], len(coefs)
    x = noise[T]
    for t in reversed(range(T)):
        h = torch.cat([x, t_emb[t].expand(B, -1), state], dim=-1)
        h = F.mish(F.linear(h, w1, b1))
        h = F.mish(F.linear(h, w2, b2))
        h = F.mish(F.linear(h, w3, b3))
        eps = F.linear(h, w4, b4)
        recip, recipm1, mean1, mean2, sigma = coefs[t][:5]
        x0 = (recip * x - recipm1 * eps).clamp(-max_action, max_action)
        x = mean1 * x0 + mean2 * x + sigma * noise[t]
    return x.clamp(-max_action, max_action)


FUSED_CHAIN_MAX_BATCH = 4096  # above it the per-step chain was faster (H200: 1.73 vs 2.89 ms at 16,384, bf16)


def fused_chain_enabled(state: torch.Tensor) -> bool:
    """Whether Diffusion.sample takes this op for these states: up to FUSED_CHAIN_MAX_BATCH states,
    unless RAMAC_FUSED_CHAIN=0; eagerly on CUDA; inside torch.compile (which otherwise fuses the
    per-step chain itself) as the custom operator ramac::denoise_chain where RAMAC_CHAIN_UNDER_COMPILE=1
    (on CUDA, or under the Triton interpreter). Forward + backward, eagerly, on an H200
    (bench/results/chain-grad-blocks-H200.json, bf16): 380 vs 651 us per-step at 256, 471 vs 771 at
    1,024, 860 vs 1,054 at 4,096, 2,892 vs 1,734 at 16,384; the graphed bf16 update at 256 went
    from 338 to 410-468 updates/s."""
    if (os.environ.get("RAMAC_FUSED_CHAIN", "1") == "0" or state.shape[0] > FUSED_CHAIN_MAX_BATCH
            or is_vmapped(state) and not stacked_enabled()):
        return False
    if torch.compiler.is_compiling():
        return under_compile() and (state.is_cuda or _interpreting())
    return state.is_cuda


def stacked_enabled() -> bool:
    """Whether seeds stacked under vmap take the fused chain (one launch for all seeds) rather than
    the per-step chain that vmap batches; RAMAC_FUSED_CHAIN_STACKED=0 opts out. On an H200, 16 RADAC
    seeds stacked at batch 256 (graph-kernels-bf16): 3,200 -> 3,610 seed-updates/s, 1,370 -> 914
    kernels per update (bench/results/stacked-chain-H200/)."""
    return os.environ.get("RAMAC_FUSED_CHAIN_STACKED", "1") != "0"


def denoise_chain(state, noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs, max_action: float,
                  precision: str | None = None):
    """The differentiable chain: fused Triton forward and backward on CUDA (fp32 tensors, hidden
    width a power of two >= 16; inside torch.compile too, as an eager op between compiled parts, or
    with RAMAC_CHAIN_UNDER_COMPILE=1 as the custom operator ramac::denoise_chain inside the graph),
    the reference op elsewhere. coefs: per step (recip, recipm1, mean1, mean2, sigma), as a
    (T, >= 5) tensor on the device (CUDA-graph capturable) or a list of tuples. precision: the
    kernels' dot inputs, "tf32" (fp32 rounded to tf32), "ieee" (exact fp32) or "bf16", always
    with fp32 accumulation, pre-activations and weight gradients (the backward's GEMMs for the
    weight and state gradients in TF32 unless "ieee", wgrad_tf32); default bf16 under bf16
    autocast (as the reference's matmuls would run), else tf32."""
    if torch.compiler.is_compiling() and under_compile():
        return _operator_chain(state, noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs, max_action, precision)
    return _eager_chain(state, noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs, max_action, precision)


@torch.compiler.disable  # an eager op between compiled parts (as the one-launch sampler): inside
# torch.compile use_triton would otherwise answer False and the reference would be traced
def _eager_chain(state, noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs, max_action, precision):
    H = w2.shape[0]
    ok = (use_triton(state, noise, w1, vmap_rule=stacked_enabled()) and H >= 16 and H & (H - 1) == 0
          and all(t.dtype == torch.float32 for t in (state, noise, w1, w2, w3, w4)))
    if not ok:
        return denoise_chain_ref(state, noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs, max_action)
    return denoise_chain_triton(state, noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs, max_action,
                                precision or _autocast_precision(state))


def denoise_chain_triton(state, noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs, max_action: float,
                         precision: str = "tf32", block_m: int | None = None):
    """The fused chain. Under torch.func.vmap (seeds stacked) one launch of each kernel serves every
    seed (a grid axis over the seeds, each its own weights)."""
    if block_m not in BLOCKS:
        raise ValueError(f"block_m must be one of {BLOCKS}, got {block_m!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not torch.is_tensor(coefs):  # (a host-to-device copy: not inside a CUDA-graph capture)
        coefs = torch.tensor([[float(v) for v in c[:5]] for c in coefs], dtype=torch.float32, device=state.device)
    args = (state, noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs)
    return fold_seeds(lambda *a: _fused(*a, max_action, precision, block_m, stacked=False),
                      lambda K, dims, *a: _fused(*seeds_first(K, a, dims), max_action, precision, block_m, stacked=True),
                      *args)


def _fused(state, noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs, max_action, precision, block_m, stacked):
    _check(state, noise, w1, w2, t_emb, coefs, stacked)
    return _Chain.apply(state, noise, *_operands(noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs),
                        float(max_action), precision, block_m)


def _operands(noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs) -> tuple:
    """The kernels' operands from the denoiser's layers: layer 1 split by its inputs, its time part
    and b1 a (T, H) table (autograd takes their gradients back to W1, b1 and the time MLP), the
    other weights transposed, the coefficients (T, 5) in fp32."""
    A, td = noise.shape[-1], t_emb.shape[-1]
    c_time = t_emb @ w1[..., A:A + td].transpose(-1, -2) + b1[..., None, :]
    return (w1[..., :A].transpose(-1, -2), w1[..., A + td:].transpose(-1, -2), c_time, w2.transpose(-1, -2), b2,
            w3.transpose(-1, -2), b3, w4.transpose(-1, -2), b4, coefs[..., :5].float().contiguous())


def _chain_forward(state, noise, w_x, w_s, c_time, w2t, b2, w3t, b3, w_outt, b_out, coef_t, max_action,
                   precision, block_m):
    """The forward kernel's launch: the chain's output, the weights in the layout and dtype its dots
    take (w_x, w_s, w2t, w3t, w_outt: what the backward reads) and what it saves (x_in, a1, a2, a3,
    eps, x_pre); every returned tensor is new (none is an input or a view of one)."""
    lead = tuple(state.shape[:-2])  # (K,): seeds stacked
    B, S = state.shape[-2:]
    A, H, T = noise.shape[-1], w2t.shape[-2], coef_t.shape[-2]
    A_P, S_P = _pad(A), _pad(S)
    dev = state.device

    dot_t = torch.bfloat16 if precision == "bf16" else torch.float32  # the weights' dtype in the dots

    def padded(t, *size, dtype=dot_t):  # t zero-padded to (*lead, *size)
        out = torch.zeros(*lead, *size, device=dev, dtype=dtype)
        out[(...,) + tuple(slice(0, n) for n in t.shape[len(lead):])] = t
        return out

    def fresh(t, dtype=dot_t):  # a contiguous copy in dtype (never the input itself)
        return torch.empty(t.shape, device=dev, dtype=dtype).copy_(t)

    packed = (padded(w_x, A_P, H), padded(w_s, S_P, H), fresh(w2t), fresh(w3t), padded(w_outt, H, A_P))
    w_x_p, w_s_p, w2t_p, w3t_p, w_outt_p = packed
    state_c, noise_c = state.float().contiguous(), noise.float().contiguous()
    coef_t = coef_t.float().contiguous()
    saved = (torch.empty(*lead, T, B, A_P, device=dev), *(torch.empty(*lead, T, B, H, device=dev) for _ in range(3)),
             torch.empty(*lead, T, B, A_P, device=dev), torch.empty(*lead, B, A_P, device=dev))
    out = torch.empty(*lead, B, A, device=dev)
    bm = block_m or _forward_block(B, dev, lead[0] if lead else 1)
    if B and all(lead):
        _chain_fwd_kernel[(triton.cdiv(B, bm), *lead)](
            state_c, noise_c, out, w_x_p, w_s_p, c_time.float().contiguous(), w2t_p, b2.float().contiguous(), w3t_p,
            b3.float().contiguous(), w_outt_p, padded(b_out, A_P, dtype=torch.float32), coef_t, *saved,
            B, S, A, T, max_action, H=H, A_P=A_P, S_P=S_P, BM=bm, BN=min(32, H),
            PRECISION="ieee" if precision == "ieee" else "tf32", UPCAST=os.environ.get("TRITON_INTERPRET") == "1",
            STACKED=bool(lead), **_launch(H, precision))
    return out, packed, saved, bm


def _chain_backward(g, state, coef_t, packed, saved, bm, max_action, precision) -> tuple:
    """The backward kernel's launch and the weight gradients' products: the gradients of the
    forward's inputs (state, w_x, w_s, c_time, w2t, b2, w3t, b3, w_outt, b_out), contiguous fp32.
    The products run in fp32, also inside bf16 autocast (the updaters run forward and backward in
    one autocast region), on tensor cores (TF32) unless the chain's own dots are exact fp32."""
    with torch.autocast(g.device.type, enabled=False), _matmul_tf32(wgrad_tf32(precision)):
        return _backward_in_fp32(g, state, coef_t, packed, saved, bm, max_action, precision)


def _backward_in_fp32(g, state, coef_t, packed, saved, bm, max_action, precision) -> tuple:
    w_x, w_s, w2t, w3t, w_outt = packed
    x_in, a1, a2, a3, eps, x_pre = saved
    lead = tuple(state.shape[:-2])
    B, S = state.shape[-2:]
    A, H, T = g.shape[-1], w2t.shape[-1], coef_t.shape[-2]
    A_P = w_x.shape[-2]
    d_eps, d_a1 = torch.empty_like(eps), torch.empty_like(a1)
    d_a2, d_a3 = torch.empty_like(a2), torch.empty_like(a3)
    g = g.float().contiguous()
    state = state.float()
    if B and all(lead):
        bm = 16 if H >= 256 else bm  # the backward keeps two (BM, H) fp32 tiles live: smaller blocks spill less
        _chain_bwd_kernel[(triton.cdiv(B, bm), *lead)](
            g, w_x, w2t, w3t, w_outt, coef_t.float().contiguous(), x_in, a1, a2, a3, eps, x_pre, d_eps, d_a1,
            d_a2, d_a3, B, A, T, max_action, H=H, A_P=A_P, BM=bm, BN=min(32, H),
            PRECISION="ieee" if precision == "ieee" else "tf32", UPCAST=os.environ.get("TRITON_INTERPRET") == "1",
            STACKED=bool(lead), **_launch(H, precision))
    rows = T * B  # each weight's gradient: one product over every step and state (per seed)
    h1, h2, h3 = (F.mish(a).reshape(*lead, rows, H) for a in (a1, a2, a3))
    d_a1r = d_a1.reshape(*lead, rows, H)

    def tr(x):
        return x.transpose(-1, -2)

    d_a1_steps = d_a1.sum(-3)  # state enters layer 1 at every step
    return (d_a1_steps @ tr(w_s[..., :S, :].float()),
            tr(x_in.reshape(*lead, rows, A_P)[..., :A]) @ d_a1r,
            tr(state) @ d_a1_steps,
            d_a1.sum(-2),
            tr(h1) @ d_a2.reshape(*lead, rows, H), d_a2.sum((-3, -2)),
            tr(h2) @ d_a3.reshape(*lead, rows, H), d_a3.sum((-3, -2)),
            (tr(h3) @ d_eps.reshape(*lead, rows, A_P)[..., :A]).contiguous(), d_eps.sum((-3, -2))[..., :A].contiguous())


class _Chain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, state, noise, w_x, w_s, c_time, w2t, b2, w3t, b3, w_outt, b_out, coef_t, max_action,
                precision, block_m):
        if ctx.needs_input_grad[1]:
            raise ValueError("denoise_chain: the fused chain takes no gradient to its noise (reparameterised "
                             "draws are constants); detach it")
        out, packed, saved, bm = _chain_forward(state, noise, w_x, w_s, c_time, w2t, b2, w3t, b3, w_outt, b_out,
                                                coef_t, max_action, precision, block_m)
        ctx.save_for_backward(state, coef_t, *packed, *saved)
        ctx.shapes = (bm, float(max_action), precision)
        return out

    @staticmethod
    def backward(ctx, g):
        state, coef_t, *rest = ctx.saved_tensors
        bm, max_action, precision = ctx.shapes
        grads = _chain_backward(g, state, coef_t, rest[:5], rest[5:], bm, max_action, precision)
        need = ctx.needs_input_grad
        return (grads[0] if need[0] else None, None,
                *(grads[1 + i] if need[2 + i] else None for i in range(9)), None, None, None, None)


# --------------------------------------------------------------------------
# the same kernels as opaque operators for torch.compile
# --------------------------------------------------------------------------
# With RAMAC_CHAIN_UNDER_COMPILE=1, compiled code (Diffusion.sample inside a torch.compile'd actor
# loss) calls the fused chain as the custom operator ramac::denoise_chain, which Inductor leaves
# whole and a CUDA graph captures, instead of compiling the per-step chain (T x 4 GEMMs forward, more
# backward) or breaking the graph around the eager op. Under torch.func.vmap (seeds stacked) its
# vmap rule runs it once for every seed. The forward operator returns what the backward needs (the
# weights in the dots' layout and the saved activations) as extra outputs.
def under_compile() -> bool:
    """RAMAC_CHAIN_UNDER_COMPILE: "1" takes the operator in compiled code, "0" (default until timed
    against Inductor's per-step chain on a GPU) leaves the per-step chain to Inductor."""
    return env_switch("RAMAC_CHAIN_UNDER_COMPILE", False)


def _operator_chain(state, noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs, max_action, precision):
    """denoise_chain inside compiled code with the operator switched on: the operator where the
    kernels take these tensors (CUDA, or the interpreter; fp32; hidden width a power of two >= 16;
    coefficients a tensor), the reference otherwise."""
    H = w2.shape[-2]
    tensors = (state, noise, w1, w2, w3, w4)
    if not (HAS_TRITON and get_backend() != "reference" and all(t.is_cuda or _interpreting() for t in tensors)
            and H >= 16 and H & (H - 1) == 0 and torch.is_tensor(coefs)
            and all(t.dtype == torch.float32 for t in tensors)):
        return denoise_chain_ref(state, noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs, max_action)
    _check(state, noise, w1, w2, t_emb, coefs)
    operands = _operands(noise, w1, b1, w2, b2, w3, b3, w4, b4, t_emb, coefs)
    return _chain_op(state, noise.detach(), *operands, float(max_action), precision or _autocast_precision(state))[0]


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _autocast_precision(state) -> str:
    """The dots' default: bf16 under bf16 autocast (as the reference's matmuls would run), else tf32."""
    bf16 = torch.is_autocast_enabled(state.device.type) and \
        torch.get_autocast_dtype(state.device.type) == torch.bfloat16
    return "bf16" if bf16 else "tf32"


@torch.library.custom_op("ramac::denoise_chain", mutates_args=())
def _chain_op(state: torch.Tensor, noise: torch.Tensor, w_x: torch.Tensor, w_s: torch.Tensor, c_time: torch.Tensor,
              w2t: torch.Tensor, b2: torch.Tensor, w3t: torch.Tensor, b3: torch.Tensor, w_outt: torch.Tensor,
              b_out: torch.Tensor, coef_t: torch.Tensor, max_action: float, precision: str) -> list[torch.Tensor]:
    """[out, the five weights as the dots take them, the six saved activations] (_chain_forward)."""
    out, packed, saved, _ = _chain_forward(state, noise, w_x, w_s, c_time, w2t, b2, w3t, b3, w_outt, b_out, coef_t,
                                           max_action, precision, None)
    return [out, *packed, *saved]


@_chain_op.register_fake
def _(state, noise, w_x, w_s, c_time, w2t, b2, w3t, b3, w_outt, b_out, coef_t, max_action, precision):
    lead, (B, S) = tuple(state.shape[:-2]), state.shape[-2:]
    A, H, T = noise.shape[-1], w2t.shape[-2], coef_t.shape[-2]
    A_P, S_P = _pad(A), _pad(S)
    dot_t = torch.bfloat16 if precision == "bf16" else torch.float32

    def new(*size, dtype=torch.float32):
        return state.new_empty((*lead, *size), dtype=dtype)

    return [new(B, A), new(A_P, H, dtype=dot_t), new(S_P, H, dtype=dot_t), new(H, H, dtype=dot_t),
            new(H, H, dtype=dot_t), new(H, A_P, dtype=dot_t), new(T, B, A_P), new(T, B, H), new(T, B, H),
            new(T, B, H), new(T, B, A_P), new(B, A_P)]


@torch.library.custom_op("ramac::denoise_chain_backward", mutates_args=())
def _chain_backward_op(g: torch.Tensor, state: torch.Tensor, coef_t: torch.Tensor, w_x: torch.Tensor,
                       w_s: torch.Tensor, w2t: torch.Tensor, w3t: torch.Tensor, w_outt: torch.Tensor,
                       x_in: torch.Tensor, a1: torch.Tensor, a2: torch.Tensor, a3: torch.Tensor, eps: torch.Tensor,
                       x_pre: torch.Tensor, max_action: float, precision: str) -> list[torch.Tensor]:
    """The gradients of the forward operator's tensors: state, w_x, w_s, c_time, w2t, b2, w3t, b3,
    w_outt, b_out (_chain_backward)."""
    lead = tuple(state.shape[:-2])
    bm = _forward_block(state.shape[-2], state.device, lead[0] if lead else 1)
    return list(_chain_backward(g, state, coef_t, (w_x, w_s, w2t, w3t, w_outt), (x_in, a1, a2, a3, eps, x_pre), bm,
                                max_action, precision))


@_chain_backward_op.register_fake
def _(g, state, coef_t, w_x, w_s, w2t, w3t, w_outt, x_in, a1, a2, a3, eps, x_pre, max_action, precision):
    lead, (B, S) = tuple(state.shape[:-2]), state.shape[-2:]
    A, H, T = g.shape[-1], w2t.shape[-1], coef_t.shape[-2]

    def new(*size):
        return state.new_empty((*lead, *size), dtype=torch.float32)

    return [new(B, S), new(A, H), new(S, H), new(T, H), new(H, H), new(H), new(H, H), new(H), new(H, A), new(A)]


def _chain_op_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[11], *output[1:])
    ctx.max_action, ctx.precision = inputs[12], inputs[13]


def _chain_op_grad(ctx, grads):
    state, coef_t, *rest = ctx.saved_tensors
    g = _chain_backward_op(grads[0], state, coef_t, *rest, ctx.max_action, ctx.precision)
    need = ctx.needs_input_grad
    return (g[0] if need[0] else None, None, *(g[1 + i] if need[2 + i] else None for i in range(9)),
            None, None, None)


_chain_op.register_autograd(_chain_op_grad, setup_context=_chain_op_setup)


def _seeds_folded(op, n_tensors):
    """A vmap rule for op: its first n_tensors arguments with the seeds first (one call for every
    seed, the kernels' STACKED layout), each output stacked along dimension 0."""
    def rule(info, in_dims, *args):
        tensors = seeds_first(info.batch_size, args[:n_tensors], in_dims[:n_tensors])
        outs = op(*tensors, *args[n_tensors:])
        return outs, [0] * len(outs)
    return rule


_chain_op.register_vmap(_seeds_folded(_chain_op, 12))
_chain_backward_op.register_vmap(_seeds_folded(_chain_backward_op, 14))


def wgrad_tf32(precision: str) -> bool:
    """Whether the backward's weight-gradient products (T x B rows per seed) run in TF32 on CUDA:
    where the chain's dots are tf32 or bf16 (RAMAC_CHAIN_WGRAD_TF32=0 keeps them in exact fp32).
    16 stacked RADAC seeds at batch 256 on an H200: 3,610 seed-updates/s with these products in
    exact fp32, 3,750 in TF32 (bench/results/speed-ab-H200/)."""
    return precision != "ieee" and os.environ.get("RAMAC_CHAIN_WGRAD_TF32", "1") != "0"


@contextlib.contextmanager
def _matmul_tf32(on: bool):
    """CUDA fp32 matmuls in TF32 within the block (the flag is read when each product is issued,
    so a captured CUDA graph keeps the choice). The new API's flag, saved and restored exactly;
    inside the block the legacy reads (allow_tf32, get_float32_matmul_precision) raise torch's
    mixed-API error, and the flag is process-wide (not for backwards on several threads at once)."""
    if not on:
        yield
        return
    flags = torch.backends.cuda.matmul
    before = flags.fp32_precision
    flags.fp32_precision = "tf32"
    try:
        yield
    finally:
        flags.fp32_precision = before


def _launch(H: int, precision: str) -> dict:
    """Warps and pipeline stages: fp32 weight tiles take twice the shared memory (one stage, as the
    sampler's fp32 path), and wide hidden layers spread their (BM, H) tiles over 8 warps."""
    return {"num_warps": 8 if H >= 128 else 4, "num_stages": 2 if precision == "bf16" else 1}


if HAS_TRITON:
    import triton
    import triton.language as tl

    from ._jit import _dot, _mish, _seed_chain_ptrs, _step_coefs

    @triton.jit
    def _as_dot(x, w, UPCAST: tl.constexpr):
        # x (fp32) as the left operand of a dot with w: w's dtype. The interpreter's fp32 -> bf16 cast
        # truncates (twice the error of a GPU's round to nearest even), so interpreted runs round
        # to nearest even by hand and keep the bf16 value in fp32 (_dot's UPCAST multiplies in fp32)
        if UPCAST and w.dtype == tl.bfloat16:
            bits = x.to(tl.int32, bitcast=True)
            return ((bits + 0x7FFF + ((bits >> 16) & 1)) & -65536).to(tl.float32, bitcast=True)
        return x.to(w.dtype)

    @triton.jit
    def _mish_grad(a):
        # d/da [a tanh(softplus(a))] = tanh(sp) + a sigmoid(a) (1 - tanh(sp)^2); = 1 for large a
        e = tl.exp(tl.minimum(a, 20.0))
        n = e * (e + 2.0)
        th = n / (n + 2.0)
        return tl.where(a > 20.0, 1.0, th + a * (e / (1.0 + e)) * (1.0 - th * th))

    @triton.jit
    def _seed_steps(sid, x_ptr, h1_ptr, h2_ptr, h3_ptr, B, T, H: tl.constexpr, A_P: tl.constexpr):
        # seed sid's slices of four per-step tensors, each stacked contiguous along a leading seed
        # dimension: one of (T, B, A_P) and three of (T, B, H) (the forward's x_t or eps and a1..a3;
        # the backward's d_eps and d_a1..d_a3)
        return (x_ptr + sid * T * B * A_P, h1_ptr + sid * T * B * H, h2_ptr + sid * T * B * H,
                h3_ptr + sid * T * B * H)

    @triton.jit
    def _chain_fwd_kernel(
        state_ptr, noise_ptr, out_ptr,  # (B, S), (T + 1, B, A), (B, A) fp32
        w_x_ptr, w_s_ptr, c_time_ptr,  # (A_P, H), (S_P, H), (T, H)
        w2_ptr, b2_ptr, w3_ptr, b3_ptr,  # (H, H) W2^T, (H,), (H, H) W3^T, (H,)
        w_out_ptr, b_out_ptr,  # (H, A_P) W4^T, (A_P,)
        coef_ptr,  # (T, 5) recip, recipm1, mean1, mean2, sigma
        x_in_ptr, a1_ptr, a2_ptr, a3_ptr, eps_ptr, x_pre_ptr,  # saved: (T, B, A_P), 3 x (T, B, H), (T, B, A_P), (B, A_P)
        B, S, A, T, max_action,
        H: tl.constexpr, A_P: tl.constexpr, S_P: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        STACKED: tl.constexpr = False,  # seeds stacked: program_id(1) picks a seed, every tensor has a
        # leading seed dimension (the coefficients too), contiguous
    ):
        if STACKED:
            sid = tl.program_id(1).to(tl.int64)
            (state_ptr, noise_ptr, out_ptr, w_x_ptr, w_s_ptr, c_time_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, w_out_ptr,
             b_out_ptr, coef_ptr) = _seed_chain_ptrs(
                sid, state_ptr, noise_ptr, out_ptr, w_x_ptr, w_s_ptr, c_time_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr,
                w_out_ptr, b_out_ptr, coef_ptr, B, S, A, T, H, A_P, S_P, 5)
            x_in_ptr, a1_ptr, a2_ptr, a3_ptr = _seed_steps(sid, x_in_ptr, a1_ptr, a2_ptr, a3_ptr, B, T, H, A_P)
            eps_ptr += sid * T * B * A_P
            x_pre_ptr += sid * B * A_P
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        row_ok = rows < B
        a_cols = tl.arange(0, A_P)
        s_cols = tl.arange(0, S_P)
        hk = tl.arange(0, H)
        bn = tl.arange(0, BN)
        x_ok = row_ok[:, None] & (a_cols < A)[None, :]
        s = tl.load(state_ptr + rows[:, None] * S + s_cols[None, :],
                    mask=row_ok[:, None] & (s_cols < S)[None, :], other=0.0)
        s = _as_dot(s, tl.load(w_s_ptr + s_cols[:, None] * H + hk[None, :]), UPCAST)  # kept: (BM, S_P) only
        noise_offs = rows[:, None] * A + a_cols[None, :]
        keep_a = rows[:, None] * A_P + a_cols[None, :]  # (B, A_P) layout of the saved x_t and eps
        keep_h = rows[:, None] * H + hk[None, :]
        x = tl.load(noise_ptr + T * B * A + noise_offs, mask=x_ok, other=0.0)
        b3 = tl.load(b3_ptr + hk)
        b_out = tl.load(b_out_ptr + a_cols)
        for i in range(T):  # (weights reloaded each step, from L2: fewer live registers than keeping them)
            t = T - 1 - i
            tl.store(x_in_ptr + t * B * A_P + keep_a, x, mask=row_ok[:, None])
            a1 = _dot(s, tl.load(w_s_ptr + s_cols[:, None] * H + hk[None, :]), None, PRECISION, UPCAST)
            w_x = tl.load(w_x_ptr + a_cols[:, None] * H + hk[None, :])
            a1 = _dot(_as_dot(x, w_x, UPCAST), w_x, a1, PRECISION, UPCAST) + tl.load(c_time_ptr + t * H + hk)[None, :]
            tl.store(a1_ptr + t * B * H + keep_h, a1, mask=row_ok[:, None])
            h1 = _as_dot(_mish(a1), w_x, UPCAST)  # in the dots' dtype once (bf16: half the live registers)
            acc = tl.zeros([BM, H], dtype=tl.float32)
            for n0 in range(0, H, BN):
                w2c = tl.load(w2_ptr + hk[:, None] * H + n0 + bn[None, :])  # (H, BN)
                a2c = _dot(h1, w2c, None, PRECISION, UPCAST) + tl.load(b2_ptr + n0 + bn)[None, :]
                tl.store(a2_ptr + t * B * H + rows[:, None] * H + n0 + bn[None, :], a2c, mask=row_ok[:, None])
                w3c = tl.load(w3_ptr + (n0 + bn[:, None]) * H + hk[None, :])  # (BN, H)
                acc = _dot(_as_dot(_mish(a2c), w3c, UPCAST), w3c, acc, PRECISION, UPCAST)
            a3 = acc + b3[None, :]
            tl.store(a3_ptr + t * B * H + keep_h, a3, mask=row_ok[:, None])
            w_out = tl.load(w_out_ptr + hk[:, None] * A_P + a_cols[None, :])
            eps = _dot(_as_dot(_mish(a3), w_out, UPCAST), w_out, None, PRECISION, UPCAST) + b_out[None, :]
            tl.store(eps_ptr + t * B * A_P + keep_a, eps, mask=row_ok[:, None])
            recip, recipm1, mean1, mean2, sigma = _step_coefs(coef_ptr, t, 5)
            x0 = tl.minimum(tl.maximum(recip * x - recipm1 * eps, -max_action), max_action)
            z = tl.load(noise_ptr + t * B * A + noise_offs, mask=x_ok, other=0.0)
            x = tl.where(x_ok, mean1 * x0 + mean2 * x + sigma * z, 0.0)  # padded columns stay 0
        tl.store(x_pre_ptr + keep_a, x, mask=row_ok[:, None])
        tl.store(out_ptr + noise_offs, tl.minimum(tl.maximum(x, -max_action), max_action), mask=x_ok)

    @triton.jit
    def _chain_bwd_kernel(
        g_ptr,  # (B, A) gradient of the chain's output
        w_x_ptr, w2_ptr, w3_ptr, w_out_ptr, coef_ptr,  # as in the forward
        x_in_ptr, a1_ptr, a2_ptr, a3_ptr, eps_ptr, x_pre_ptr,  # the forward's saves
        d_eps_ptr, d_a1_ptr, d_a2_ptr, d_a3_ptr,  # out: (T, B, A_P), 3 x (T, B, H)
        B, A, T, max_action,
        H: tl.constexpr, A_P: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        STACKED: tl.constexpr = False,  # as the forward's
    ):
        if STACKED:
            sid = tl.program_id(1).to(tl.int64)
            g_ptr += sid * B * A
            w_x_ptr += sid * A_P * H
            w2_ptr += sid * H * H
            w3_ptr += sid * H * H
            w_out_ptr += sid * H * A_P
            coef_ptr += sid * T * 5
            x_in_ptr, a1_ptr, a2_ptr, a3_ptr = _seed_steps(sid, x_in_ptr, a1_ptr, a2_ptr, a3_ptr, B, T, H, A_P)
            eps_ptr += sid * T * B * A_P
            x_pre_ptr += sid * B * A_P
            d_eps_ptr, d_a1_ptr, d_a2_ptr, d_a3_ptr = _seed_steps(sid, d_eps_ptr, d_a1_ptr, d_a2_ptr, d_a3_ptr,
                                                                  B, T, H, A_P)
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        row_ok = rows < B
        a_cols = tl.arange(0, A_P)
        hk = tl.arange(0, H)
        bn = tl.arange(0, BN)
        x_ok = row_ok[:, None] & (a_cols < A)[None, :]
        keep_a = rows[:, None] * A_P + a_cols[None, :]
        keep_h = rows[:, None] * H + hk[None, :]
        g = tl.load(g_ptr + rows[:, None] * A + a_cols[None, :], mask=x_ok, other=0.0)
        x_pre = tl.load(x_pre_ptr + keep_a, mask=x_ok, other=0.0)
        g = tl.where((x_pre >= -max_action) & (x_pre <= max_action), g, 0.0)  # the final clamp
        for t in range(T):  # the forward ran t = T-1 .. 0; the backward goes t = 0 .. T-1
            recip, recipm1, mean1, mean2, _ = _step_coefs(coef_ptr, t, 5)
            x_t = tl.load(x_in_ptr + t * B * A_P + keep_a, mask=x_ok, other=0.0)
            eps = tl.load(eps_ptr + t * B * A_P + keep_a, mask=x_ok, other=0.0)
            u = recip * x_t - recipm1 * eps
            d_x0 = tl.where((u >= -max_action) & (u <= max_action), mean1 * g, 0.0)
            d_eps = -recipm1 * d_x0
            tl.store(d_eps_ptr + t * B * A_P + keep_a, d_eps, mask=row_ok[:, None])
            d_x = mean2 * g + recip * d_x0
            a3 = tl.load(a3_ptr + t * B * H + keep_h, mask=row_ok[:, None], other=0.0)
            w_out_t = tl.load(w_out_ptr + hk[None, :] * A_P + a_cols[:, None])  # (A_P, H): W4
            d_a3 = _dot(_as_dot(d_eps, w_out_t, UPCAST), w_out_t, None, PRECISION, UPCAST) * _mish_grad(a3)
            tl.store(d_a3_ptr + t * B * H + keep_h, d_a3, mask=row_ok[:, None])
            d_a3 = _as_dot(d_a3, w_out_t, UPCAST)  # the chunk loop's left operand, cast once
            d_h1 = tl.zeros([BM, H], dtype=tl.float32)
            for n0 in range(0, H, BN):
                w3c = tl.load(w3_ptr + (n0 + bn[None, :]) * H + hk[:, None])  # (H, BN): W3 block
                a2c = tl.load(a2_ptr + t * B * H + rows[:, None] * H + n0 + bn[None, :], mask=row_ok[:, None],
                              other=0.0)
                d_a2c = _dot(d_a3, w3c, None, PRECISION, UPCAST) * _mish_grad(a2c)
                tl.store(d_a2_ptr + t * B * H + rows[:, None] * H + n0 + bn[None, :], d_a2c, mask=row_ok[:, None])
                w2c = tl.load(w2_ptr + hk[None, :] * H + n0 + bn[:, None])  # (BN, H): W2 block
                d_h1 = _dot(_as_dot(d_a2c, w2c, UPCAST), w2c, d_h1, PRECISION, UPCAST)
            a1 = tl.load(a1_ptr + t * B * H + keep_h, mask=row_ok[:, None], other=0.0)
            d_a1 = d_h1 * _mish_grad(a1)
            tl.store(d_a1_ptr + t * B * H + keep_h, d_a1, mask=row_ok[:, None])
            w_x_t = tl.load(w_x_ptr + a_cols[None, :] * H + hk[:, None])  # (H, A_P)
            g = tl.where(x_ok, _dot(_as_dot(d_a1, w_x_t, UPCAST), w_x_t, d_x, PRECISION, UPCAST), 0.0)
