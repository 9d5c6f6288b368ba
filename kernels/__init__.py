"""Triton kernels of ramac, each beside its plain-PyTorch reference op.

Installed as `ramac.kernels`; nothing here imports from `ramac`. The public
ops below dispatch through one switch (`use`, `set_backend`, or the
RAMAC_KERNELS environment variable): Triton on CUDA tensors, reference ops
everywhere else.
"""

from ._dispatch import BACKENDS, HAS_TRITON, get_backend, set_backend, use, use_triton
from .chain_grad import denoise_chain, denoise_chain_ref, fused_chain_enabled
from .denoise import StepCoefs, posterior_step, posterior_step_ref
from .iqn_critic import iqn_quantiles, iqn_quantiles_ref
from .quantile_huber import quantile_huber_loss, quantile_huber_loss_ref
from .risk import (
    DEFAULT_PARAMS,
    DISTORTIONS,
    check_distortion,
    distort,
    distort_ref,
    quadrature_fractions,
    tail_mean,
    tail_mean_ref,
)
from .sampler import PRECISIONS, PackedDenoiser, pack_denoiser, sample_chain, sample_chain_ref
from .student import PackedStudent, pack_student, student_forward_ref, student_sample

__all__ = [
    "BACKENDS", "HAS_TRITON", "get_backend", "set_backend", "use", "use_triton",
    "denoise_chain", "denoise_chain_ref", "fused_chain_enabled",
    "StepCoefs", "posterior_step", "posterior_step_ref",
    "iqn_quantiles", "iqn_quantiles_ref",
    "quantile_huber_loss", "quantile_huber_loss_ref",
    "DEFAULT_PARAMS", "DISTORTIONS", "check_distortion", "distort", "distort_ref",
    "quadrature_fractions", "tail_mean", "tail_mean_ref",
    "PRECISIONS", "PackedDenoiser", "pack_denoiser", "sample_chain", "sample_chain_ref",
    "PackedStudent", "pack_student", "student_forward_ref", "student_sample",
]
