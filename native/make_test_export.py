"""Test fixture of the native sampler (ctest, native/gpu_check.sh): a freshly initialised RADAC
actor exported in the HalfCheetah shapes the library is built for by default, plus a test case
the C++ test compares against:

    DIR/header.json, DIR/weights.bin      the export (`ramac export`'s format)
    DIR/states.bin   (B, S) fp32          states as the denoiser sees them
    DIR/noise.bin    (T + 1, B, A) fp32   noise[T] = x_T
    DIR/expected.bin (B, A) fp32          kernels.sample_chain_ref on them (fp32, CPU)
    DIR/test_case.json                    {"batch": B, "atol": ...}: atol is twice torch's own bf16
                                          error on the case (at least 2e-2), the kernel tests' rule

    python native/make_test_export.py DIR [--state-dim 17 --action-dim 6 --hidden 256 --steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # nothing here runs a kernel; keep ramac.kernels importable as usual


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--state-dim", type=int, default=17)
    p.add_argument("--action-dim", type=int, default=6)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="diffusion steps T")
    p.add_argument("--batch", type=int, default=8449, help="states in the test case (8,449: past one wave of 64-row "
                   "programs on 132 SMs, so the whole case takes the last one-block config; the C++ test also "
                   "samples its first 1, 5 and 2,113 states)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from ramac.agents.configs import RADACConfig
    from ramac.agents.registry import make_agent
    from ramac.export import write_export
    from ramac.kernels import sample_chain_ref

    torch.manual_seed(a.seed)
    S, A, T, B = a.state_dim, a.action_dim, a.steps, a.batch
    agent = make_agent("radac", S, A, RADACConfig(actor_hidden=a.hidden, n_timesteps=T).validate())
    agent.set_obs_norm(torch.randn(S), 0.5 + torch.rand(S))  # so the header's statistics are not the identity
    write_export(agent, a.out, overwrite=True, source={"algo": "radac", "step": 0, "fixture": "make_test_export.py"})

    packed = agent.policy.diffusion.pack(agent.policy.actor_ema)
    g = torch.Generator().manual_seed(a.seed + 1)
    states = 3 * torch.randn(B, S, generator=g)
    noise = torch.randn(T + 1, B, A, generator=g)
    want = sample_chain_ref(packed, states, noise)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lowp = sample_chain_ref(packed, states, noise).float()
    atol = max(2 * (lowp - want).abs().max().item(), 2e-2)
    for name, t in (("states", states), ("noise", noise), ("expected", want)):
        t.contiguous().numpy().astype("<f4").tofile(a.out / f"{name}.bin")
    (a.out / "test_case.json").write_text(json.dumps({"batch": B, "atol": atol}) + "\n")
    print(f"make_test_export: {a.out} (S={S}, A={A}, H={a.hidden}, T={T}; test case B={B}, atol {atol:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
