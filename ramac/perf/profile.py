"""`ramac profile`: a short training run with NVTX ranges (ramac.nvtx) between
cudaProfilerStart/Stop, for Nsight Systems and Nsight Compute."""

from __future__ import annotations

import torch

from ..nvtx import enable, nvtx_range


def run_profile(preset: str = "halfcheetah-medium-expert", batch: int = 256, warmup: int = 20, steps: int = 50,
                graph: bool = False, bf16: bool = False, device="cuda", compile: bool = False,
                algo: str = "radac") -> dict:
    """A short training run with NVTX ranges, bracketed by cudaProfilerStart/Stop.

    Warm-up steps (compilation, graph capture) run outside the profiled window, so
    `nsys profile --capture-range=cudaProfilerApi` or `ncu --profile-from-start off`
    capture exactly the steady state. Returns wall-clock figures of the window.
    """
    import time

    from ..agents import make_agent
    from ..config import build_configs, risk_from_step_one
    from ..data.container import synthetic_dataset
    from ..train.updaters import make_updater

    enable(True)
    device = torch.device(device)
    agent_cfg, _ = build_configs(preset, algo, agent_overrides=risk_from_step_one(algo))
    data = synthetic_dataset(device=device)
    torch.manual_seed(0)
    agent = make_agent(algo, data.state_dim, data.action_dim, agent_cfg).to(device)
    updater = make_updater(agent, data, batch, graph=graph, bf16=bf16, compile=compile)
    for _ in range(warmup):
        updater.step()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    t0 = time.perf_counter()
    with nvtx_range("steady"):
        for i in range(steps):
            with nvtx_range(f"update {i}"):
                updater.step()
        updater.sync()
        with nvtx_range("eval/act"):
            agent.act(data.obs[:batch])
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    torch.cuda.cudart().cudaProfilerStop()
    enable(False)
    return {"steps": steps, "batch": batch, "graph": graph, "bf16": bf16, "compile": compile, "wall_s": wall,
            "updates_per_s": steps / wall}
