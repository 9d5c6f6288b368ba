"""`ramac export`: a run's evaluated diffusion actor (the EMA denoiser, packed for the chain
sampler) as header.json + weights.bin, the files the native sampler (native/, libramac_sampler)
loads; and the reader of that format. The format is documented in native/FORMAT.md.

    header, tensors = read_export(DIR)        # tensors: name -> fp32 torch tensor (kernel layout)
    packed = packed_from_export(DIR)          # a kernels.PackedDenoiser for kernels.sample_chain
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT, FORMAT_VERSION, KIND = "ramac-actor", 1, "diffusion-chain"
HEADER, WEIGHTS = "header.json", "weights.bin"
# the PackedDenoiser tensors in weights.bin, in this order (shapes: native/FORMAT.md)
TENSORS = ("w_x", "w_s", "c_time", "w2", "b2", "w3", "b3", "w_out", "b_out", "coefs")
COEF_COLUMNS = ("recip", "recipm1", "mean1", "mean2", "sigma")
ALIGN = 256  # byte alignment of each tensor in weights.bin


def export_run(run_dir, out, overwrite: bool = False) -> dict:
    """Export RUN_DIR's checkpoint (its EMA actor) into `out`; returns the header written."""
    from .train.loop import load_agent

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory {run_dir}")
    check_out(Path(out), overwrite)  # before the checkpoint is read: a refused --out costs nothing
    agent, train_cfg, step = load_agent(run_dir, "cpu")
    source = {"run_dir": str(run_dir), "step": step, "task": train_cfg.task, "algo": train_cfg.algo}
    return write_export(agent, out, overwrite, source)


def write_export(agent, out, overwrite: bool = False, source: dict | None = None) -> dict:
    """Write agent's EMA actor into the directory `out` (replaced whole, or not at all)."""
    header, blob = encode(agent, source or {})
    _replace_dir(Path(out), {HEADER: (json.dumps(header, indent=1) + "\n").encode(), WEIGHTS: blob}, overwrite)
    return header


def diffusion_policy(agent):
    """The agent's DiffusionPolicy; ValueError for an agent whose actor is not a diffusion chain."""
    from .agents.policy import DiffusionPolicy

    policy = getattr(agent, "policy", None)
    if not isinstance(policy, DiffusionPolicy):
        kind = type(policy).__name__ if policy is not None else "no generative policy"
        raise ValueError(f"a {type(agent).__name__} agent has {kind}, not a diffusion actor; ramac export writes "
                         f"the diffusion actors of radac, neutral, bc and diffusion-ql")
    return policy


def encode(agent, source: dict) -> tuple[dict, bytes]:
    """(header, weights.bin bytes) of the agent's EMA actor."""
    policy = diffusion_policy(agent)
    with torch.no_grad():
        packed = policy.diffusion.pack(policy.actor_ema)
    arrays = {name: getattr(packed, name).detach().cpu().float().contiguous().numpy() for name in TENSORS}
    bad = [name for name, a in arrays.items() if not np.isfinite(a).all()]
    if bad:
        raise ValueError(f"the actor's {', '.join(bad)} hold NaN or inf (a diverged run?); nothing exported")
    table, chunks, offset = [], [], 0
    for name in TENSORS:
        data = arrays[name].astype("<f4").tobytes()
        table.append({"name": name, "dtype": "float32", "shape": list(arrays[name].shape), "offset": offset,
                      "nbytes": len(data)})
        pad = -len(data) % ALIGN
        chunks += [data, b"\0" * pad]
        offset += len(data) + pad
    cfg = agent.cfg
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": KIND,
        "agent": source.get("algo", type(agent).__name__.lower()), "source": source,
        "state_dim": packed.state_dim, "action_dim": packed.action_dim, "hidden": packed.hidden,
        "n_steps": packed.n_steps, "state_pad": int(packed.w_s.shape[0]), "action_pad": int(packed.w_x.shape[0]),
        "max_action": packed.max_action, "schedule": cfg.beta_schedule,
        "coef_columns": list(COEF_COLUMNS), "coefs": [list(map(float, row[:5])) for row in packed.coefs_host],
        "obs_mean": agent.obs_mean.detach().cpu().double().tolist(),
        "obs_std": agent.obs_std.detach().cpu().double().tolist(),
        "eval_select": getattr(cfg, "eval_select", "none"), "sampler_precision": cfg.sampler_precision,
        "byte_order": "little", "alignment": ALIGN, "tensors": table,
    }
    return header, b"".join(chunks)


def read_export(path) -> tuple[dict, dict]:
    """(header, {name: fp32 tensor}) of an export directory; ValueError for a malformed one."""
    path = Path(path)
    try:
        header = json.loads((path / HEADER).read_text())
        blob = (path / WEIGHTS).read_bytes()
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable ramac export ({type(e).__name__}: {e})") from None
    if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path / HEADER} is not a {FORMAT} export of format version {FORMAT_VERSION}")
    tensors = {}
    for t in header["tensors"]:
        end = t["offset"] + t["nbytes"]
        if t["dtype"] != "float32" or end > len(blob) or t["nbytes"] != 4 * int(np.prod(t["shape"])):
            raise ValueError(f"{path / WEIGHTS}: tensor {t['name']} is truncated or mis-described")
        array = np.frombuffer(blob, dtype="<f4", count=t["nbytes"] // 4, offset=t["offset"])
        tensors[t["name"]] = torch.from_numpy(array.reshape(t["shape"]).astype(np.float32))
    return header, tensors


def packed_from_export(path, device="cpu"):
    """A kernels.PackedDenoiser holding an export's tensors."""
    from . import kernels

    header, t = read_export(path)
    t = {k: v.to(device) for k, v in t.items()}
    return kernels.PackedDenoiser(
        w_x=t["w_x"], w_s=t["w_s"], c_time=t["c_time"], w2=t["w2"], b2=t["b2"], w3=t["w3"], b3=t["b3"],
        w_out=t["w_out"], b_out=t["b_out"], coefs=t["coefs"], coefs_host=tuple(tuple(r) for r in header["coefs"]),
        action_dim=header["action_dim"], state_dim=header["state_dim"], max_action=header["max_action"])


def check_out(out: Path, overwrite: bool) -> None:
    """--out must be new, empty, or (with overwrite) an earlier export."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        raise ValueError(f"--out {out} exists and is not empty; pass --overwrite to replace the export in it")
    if held and not (out / HEADER).exists():
        raise ValueError(f"--out {out} holds files that are not a ramac export ({', '.join(held[:3])}); "
                         f"refusing to replace it, choose another --out")


def _replace_dir(out: Path, files: dict, overwrite: bool) -> None:
    """Write files into a temporary sibling directory, then put it in place of `out`."""
    check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would outlive the rename
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{tmp.name}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
