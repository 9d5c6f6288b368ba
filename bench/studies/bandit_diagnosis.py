"""Why the CVaR actor drifts on the bandit: train RADAC eagerly and record, every N steps,
the critics' CVaR_0.1 map over the action box, the actor's BC and risk gradient norms,
the risk gradient at the policy's actions, and policy samples (online and EMA actor).

    python -m bench.studies.bandit_diagnosis --steps 30000 --every 1000 --out results/bandit-diagnosis/cpu
    python -m bench.studies.bandit_diagnosis --full --device cuda --steps 42000 --every 2000 \\
        --probe base --probe abs:risk_norm=abs,eta=1 --out results/bandit-diagnosis/h200
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from ramac import kernels
from ramac.agents.radac import RADAC
from ramac.config import build_configs
from ramac.envs import bandit
from ramac.envs.bandit_family import get_spec
from ramac.train.updaters import make_updater
from ramac.utils import save_figure, seed_everything

GRID = np.linspace(-1, 1, 61)


def critic_maps(agent, alpha: float, device) -> dict:
    """CVaR_alpha (quadrature over [0, alpha]) and mean of min(Z1, Z2) on the grid (reward units),
    and critic 1's CVaR alone."""
    gx, gy = np.meshgrid(GRID, GRID)
    a = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32, device=device)
    s = torch.zeros(len(a), 1, device=device)
    tail, _ = kernels.quadrature_fractions(32, "cvar", alpha, device=device)
    full, _ = kernels.quadrature_fractions(32, "neutral", 0.0, device=device)
    zt, zm = agent.critic_quantiles(s, a, tail), agent.critic_quantiles(s, a, full)  # (2, N, 32)
    shape = gx.shape
    return {
        "cvar": zt.min(0).values.mean(1).reshape(shape).cpu().numpy(),
        "cvar1": zt[0].mean(1).reshape(shape).cpu().numpy(),
        "mean": zm.min(0).values.mean(1).reshape(shape).cpu().numpy(),
    }


def grad_norms(agent, batch, eta: float) -> dict:
    """Norms of the actor's BC and risk gradients (separately, before clipping) and their cosine,
    and the mean risk gradient w.r.t. the sampled action."""
    params = list(agent.actor.parameters())
    action = agent.diffusion.sample(agent.actor, batch.obs)
    weights = None
    if agent.cfg.bc_filter != "none":  # the BC term as the agent weights it
        with torch.no_grad():
            own = agent.risk.value(agent.critic1, agent.critic2, batch.obs, action.detach())
            weights, _ = agent._bc_filter_weights(batch, own)
    bc = agent.diffusion.bc_loss(agent.actor, batch.action, batch.obs, weights) * agent.cfg.lambda_bc
    g_bc = torch.autograd.grad(bc, params)
    action_leaf = action.detach().requires_grad_(True)
    risk_a = agent.risk.value(agent.critic1, agent.critic2, batch.obs, action_leaf)
    (da,) = torch.autograd.grad(risk_a.sum(), action_leaf)
    value = agent.risk.value(agent.critic1, agent.critic2, batch.obs, action)
    risk = value.mean()
    scale = value.detach().abs().mean().clamp_min(1e-6) if agent.cfg.risk_norm == "abs" else 1.0
    g_risk = torch.autograd.grad(-eta * risk / scale, params)
    flat_bc = torch.cat([g.flatten() for g in g_bc])
    flat_risk = torch.cat([g.flatten() for g in g_risk])
    cos = float(torch.dot(flat_bc, flat_risk) / (flat_bc.norm() * flat_risk.norm() + 1e-12))
    return {"bc": float(bc.detach()), "risk": float(risk.detach()), "g_bc": float(flat_bc.norm()), "g_risk": float(flat_risk.norm()),
            "cos": cos, "da_norm": float(da.norm(dim=1).mean()), "da_mean": da.mean(0).tolist(),
            "actions": action.detach().cpu().numpy()}


class Probe:
    """One agent in training plus what the diagnosis records about it."""

    def __init__(self, name, overrides, args, device):
        self.name, self.out = name, args.out / name
        cfg, train_cfg = build_configs(args.task, "radac", cpu_sized=not args.full, agent_overrides=overrides)
        self.cfg, self.batch_size = cfg, train_cfg.batch_size
        seed_everything(args.seed)
        self.data = bandit.make_dataset(spec=get_spec(args.task)).to(device)
        self.agent = RADAC(1, 2, cfg).to(device)
        self.agent.fit_data(self.data)  # one-step task: no bootstrapping; reward scale where reward_norm asks
        fast = device.type == "cuda" and not args.eager
        self.agent.seed_noise(args.seed)
        self.updater = make_updater(self.agent, self.data, self.batch_size, graph=fast, compile=False)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.probe = self.data.sample(1024, torch.Generator(device).manual_seed(123))
        self.records, self.maps, self.samples, self.ema = [], [], [], []
        self.overrides = overrides

    def record(self, step, device):
        self.updater.sync()
        g = grad_norms(self.agent, self.probe, self.cfg.eta)
        with torch.no_grad():
            ema = self.agent.act(torch.zeros(1024, 1, device=device)).cpu().numpy()
        regions = np.bincount(bandit.region_of(ema), minlength=5) / len(ema)
        online = np.bincount(bandit.region_of(g["actions"]), minlength=5) / len(ema)
        rec = {"step": step, "eta": float(self.agent.eta_at(torch.tensor(step))), **{k: v for k, v in g.items() if k != "actions"},
               "ema_shares": regions.tolist(), "online_shares": online.tolist(),
               "actor_weight_norm": float(sum(p.detach().norm() ** 2 for p in self.agent.actor.parameters()) ** 0.5)}
        self.records.append(rec)
        self.maps.append(critic_maps(self.agent, self.cfg.risk_param, device))
        self.samples.append(g["actions"][:512])
        self.ema.append(ema[:512])
        return rec

    def save(self, args):
        self.out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(self.out / "diagnosis.npz", grid=GRID, steps=np.array([r["step"] for r in self.records]),
                            cvar=np.stack([m["cvar"] for m in self.maps]), cvar1=np.stack([m["cvar1"] for m in self.maps]),
                            mean=np.stack([m["mean"] for m in self.maps]), online=np.stack(self.samples),
                            ema=np.stack(self.ema))
        meta = {"args": {k: str(v) for k, v in vars(args).items()}, "overrides": self.overrides,
                "agent_config": dataclasses.asdict(self.cfg), "records": self.records}
        (self.out / "records.json").write_text(json.dumps(meta, indent=1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30_000)
    p.add_argument("--every", type=int, default=1_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", default="bandit", help="a bandit family member")
    p.add_argument("--device", default="cpu")
    p.add_argument("--full", action="store_true", help="the full (GPU) preset instead of the CPU-sized one")
    p.add_argument("--eager", action="store_true", help="on CUDA too, no CUDA graph")
    p.add_argument("--probe", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                   help="a configuration to train and record (several train side by side); default: base")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    probes = []
    for spec in args.probe or ["base"]:
        name, _, sets = spec.partition(":")
        overrides = dict(kv.split("=", 1) for kv in sets.split(",") if kv)
        probes.append(Probe(name, overrides, args, device))
    t0 = time.time()
    for step in range(args.steps + 1):
        if step % args.every == 0:
            for pr in probes:
                with _on(pr.stream):
                    rec = pr.record(step, device)
                print(pr.name, json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()
                                           if k not in ("da_mean",)}), f"{time.time() - t0:.0f}s", flush=True)
            if step % (5 * args.every) == 0 or step == args.steps:
                for pr in probes:
                    pr.save(args)
        if step == args.steps:
            break
        for pr in probes:
            with _on(pr.stream):
                pr.updater.step()
    for pr in probes:
        title = f"{args.task}, {'full' if args.full else 'CPU-sized'} preset, {pr.name} {pr.overrides or ''}: "
        plot(pr.out, title=title)
        plot_valley(pr.out, title=title)


def _on(stream):
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


def plot(out: Path, title: str = "", n_panels: int = 6) -> None:
    """critic_maps.png (CVaR_0.1 map of min(Z1, Z2) with the EMA actor's samples, at several
    steps) and gradients.png (BC vs risk gradient norms, their cosine, mode shares over steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.load(out / "diagnosis.npz")
    recs = json.loads((out / "records.json").read_text())["records"]
    steps = d["steps"]
    pick = np.unique(np.linspace(0, len(steps) - 1, n_panels).round().astype(int))
    fig, axes = plt.subplots(2, len(pick), figsize=(3.2 * len(pick), 6.4), squeeze=False)
    lo, hi = -8.0, 3.0  # the range between the low modes (-0.9) and S (2.1); R (-30) and valleys saturate
    for col, i in enumerate(pick):
        for row, key in enumerate(("cvar", "mean")):
            ax = axes[row, col]
            im = ax.imshow(d[key][i], extent=(-1, 1, -1, 1), origin="lower", cmap="RdYlGn", vmin=lo, vmax=hi)
            ax.contour(d["grid"], d["grid"], d[key][i], levels=[-5.0, 0.0], colors="k", linewidths=0.6)
            ax.scatter(d["ema"][i][:, 0], d["ema"][i][:, 1], s=2, c="tab:blue", alpha=0.5)
            for c in bandit.CENTRES:
                ax.add_patch(plt.Circle(c, bandit.RADIUS, fill=False, ls="--", lw=0.7))
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"step {steps[i]}: critic {'CVaR$_{0.1}$' if key == 'cvar' else 'mean'}", fontsize=9)
    fig.colorbar(im, ax=axes, fraction=0.02)
    fig.suptitle(f"{title}critic maps (min of the two critics, colours clipped to [-8, 3], contours at -5 and 0) "
                 f"and EMA-actor actions (blue); dashed: mode discs", fontsize=10)
    save_figure(fig, out / "critic_maps.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    s = [r["step"] for r in recs]
    axes[0].semilogy(s, [r["g_bc"] for r in recs], label="|grad| BC (lambda_bc * L_bc)")
    axes[0].semilogy(s, [max(r["g_risk"], 1e-6) for r in recs], label="|grad| risk (eta * CVaR)")
    axes[0].semilogy(s, [max(r["da_norm"], 1e-6) for r in recs], label="|dCVaR/da| at the actions", ls=":")
    axes[0].set_xlabel("step"), axes[0].legend(fontsize=8), axes[0].set_title("actor gradient norms (before clipping)")
    axes[1].plot(s, [r["cos"] for r in recs], label="cos(grad BC, grad risk)")
    axes[1].plot(s, [r["risk"] for r in recs], label="CVaR at the online actor's actions")
    axes[1].axhline(0, c="k", lw=0.5), axes[1].legend(fontsize=8), axes[1].set_xlabel("step")
    names = list(bandit.REGIONS)
    shares = np.array([r["ema_shares"] for r in recs])
    for j, name in enumerate(names):
        axes[2].plot(s, 100 * shares[:, j], label=name)
    axes[2].set_ylabel("% of EMA-actor actions"), axes[2].set_xlabel("step"), axes[2].legend(fontsize=8)
    axes[2].set_title("where the policy acts")
    fig.suptitle(title.rstrip(": "))
    fig.tight_layout()
    save_figure(fig, out / "gradients.png", dpi=100)
    plt.close(fig)



def plot_valley(out: Path, title: str = "") -> None:
    """valley.png: the critics' CVaR_0.1 along the segment from S to L1 and from S to the
    box corner beyond S, at several steps: how the landscape between modes changes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.load(out / "diagnosis.npz")
    grid, steps = d["grid"], d["steps"]
    x_col = np.abs(grid + 0.7).argmin()  # the column x = -0.7 through S and L1
    pick = np.unique(np.linspace(1, len(steps) - 1, 6).round().astype(int))
    fig, ax = plt.subplots(1, 1, figsize=(7, 4.2))
    for i in pick:
        ax.plot(grid, d["cvar"][i][:, x_col], label=f"step {steps[i]}")
    for y, name in ((0.7, "S"), (-0.7, "L1")):
        ax.axvspan(y - 0.35, y + 0.35, color="0.9")
        ax.text(y, 2.6, name, ha="center")
    ax.axhline(2.12, ls=":", c="k", lw=0.7), ax.axhline(-0.88, ls=":", c="k", lw=0.7)
    ax.set_ylim(-12, 3.5), ax.set_xlabel("y at x = -0.7 (L1 at -0.7, S at +0.7; shaded: mode discs)")
    ax.set_ylabel("critic CVaR$_{0.1}$ (min of two)")
    ax.set_title(f"{title}the landscape between L1 and S (dotted: true CVaR of S and L1)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "valley.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
