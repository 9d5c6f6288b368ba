"""Command line: `ramac train | eval | study | sweep | report | data | behaviour | bench | profile | presets`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DESCRIPTION = """\
ramac: risk-aware offline RL with diffusion actors and distributional (IQN) critics.

  ramac train                  RADAC on the 2-D risky bandit (CPU-sized on a CPU, full preset on a GPU)
  ramac train --algo bc        behaviour cloning; neutral: the risk-neutral ablation; diffusion-ql
  ramac eval RUN_DIR           evaluate a run's checkpoint again
  ramac export RUN_DIR --out DIR   the evaluated diffusion actor for the native sampler (native/, C API)
  ramac study bandit           train an agent on the bandit family (seeds x lengths), table and figures
  ramac study agents           every agent of the registry on the bandit (seeds), one table and one figure
  ramac bench kernels|sampler|train   time kernels, the sampler or the whole update per path (GPU)
  ramac profile                where an update's time goes: per-phase and kernel tables; NVTX for Nsight
  ramac report RUN_DIR...      per-seed evaluations of many runs, bootstrap CIs over seeds, per method
  ramac sweep CONFIG.toml      tasks x agents x seeds, resumable, across GPUs with torchrun; a table per task
  ramac presets [NAME]         list the task presets or show one
"""


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (the usage is one `--help` away), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _mujoco_presets():
    from .config import preset_names  # the six Stochastic MuJoCo presets (without importing gymnasium)

    return [name for name in preset_names() if name != "bandit"]


TRAIN_OPTIONS = ("dataset", "env", "steps", "batch_size", "seed", "device", "eval_every", "eval_samples",
                 "eval_episodes", "log_every", "ckpt_every", "threads")


def _add_config_options(parser, cls, names) -> None:
    """--name options from a config dataclass: type and help from the field, default None (the
    preset's value, else the dataclass default, applies)."""
    from dataclasses import fields

    from .agents.configs import field_help

    helps, by_name = field_help(cls), {f.name: f for f in fields(cls)}
    for name in names:
        f = by_name[name]
        parser.add_argument("--" + name.replace("_", "-"), type=type(f.default), default=None,
                            help=f"{helps.get(name, '')} (default: the preset's, else {f.default})".replace("%", "%%"))


def _algo_help() -> str:
    from .agents.registry import AGENTS

    return "; ".join(f"{name}: {entry[3]}" for name, entry in AGENTS.items()) + ". Default: radac"


def _study_run_options(parser, out: Path) -> None:
    """Where a study writes and how its runs train (shared by the study commands)."""
    parser.add_argument("--out", type=Path, default=out, help="output folder")
    parser.add_argument("--runs", type=Path, help="where the run directories go (default: OUT/runs)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--full", action="store_true", help="full-size presets on a CPU too")
    parser.add_argument("--concurrent", type=int, default=8,
                        help="GPU: runs advanced side by side, one CUDA stream each (default: 8)")
    parser.add_argument("--compile", action="store_true",
                        help="GPU: torch.compile each run's update too (~30 s per run to compile)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def build_parser() -> argparse.ArgumentParser:
    from .config import ALGOS, TrainConfig, task_names

    parser = _Parser(prog="ramac", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train an agent (default: RADAC on the risky bandit)",
                       description="Train an agent and write metrics, checkpoints and plots to a run directory.")
    t.add_argument("--task", choices=task_names(), metavar="TASK",
                   help="task: a MuJoCo preset (its data set and published hyper-parameters) or a member of "
                        "the bandit family (bandit, bandit-x5, bandit-ring, ...; all use the bandit preset). "
                        "Default: bandit")
    t.add_argument("--algo", choices=ALGOS, help=_algo_help())
    _add_config_options(t, TrainConfig, TRAIN_OPTIONS)
    t.add_argument("--seeds", metavar="LIST",
                   help="train several seeds side by side in this process, e.g. 0-15 or 0,3,7 (on CUDA one graph "
                        "makes every seed's update); each seed writes RUN_DIR/seedN, the files of a single run")
    t.add_argument("--stack-seeds", action="store_true",
                   help="with --seeds (or --resume of a --seeds directory): the seeds stacked, one computation over "
                        "weights with a seed dimension, not side by side (RAMAC_STACK_SEEDS=1; README)")
    t.add_argument("--run-dir", type=Path,
                   help="where to write config, metrics, checkpoint and plots (default: runs/TASK-ALGO-seedN-TIME; "
                        "with --seeds: runs/TASK-ALGO-seedsA-B-TIME/seedN)")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint with its saved settings (a --seeds "
                        "directory: all its seeds, side by side); only --steps (a new total), --device, --kernels "
                        "and --no-progress may be given with it")
    t.add_argument("--full", action="store_true",
                   help="use the full-size preset even on a CPU (by default a CPU run of the bandit uses "
                        "smaller networks and fewer steps so it finishes in minutes)")
    t.add_argument("--no-graph", action="store_true",
                   help="on CUDA, run the update eagerly instead of replaying it as one CUDA graph")
    t.add_argument("--obs-norm", action="store_true",
                   help="normalise observations by the data set's mean and std (kept with the agent; act() takes "
                        "raw observations)")
    t.add_argument("--tensorboard", action="store_true",
                   help="also write the metrics as TensorBoard events into RUN_DIR/tensorboard (needs the "
                        "tensorboard package: pip install \"ramac[tensorboard]\")")
    t.add_argument("--bf16", action="store_true",
                   help="run the networks under bf16 autocast (fp32 master weights and quantile loss); "
                        "on CPU this checks bf16 numerics, it is not faster")
    t.add_argument("--no-compile", action="store_true",
                   help="on CUDA, skip torch.compile of the update (saves ~1 min of compiling at the start, "
                        "costs ~25 %% of the speed)")
    t.add_argument("--kernels", choices=("auto", "triton", "reference"), default="auto",
                   help="Triton kernels (on CUDA) or plain-PyTorch reference ops (default: auto)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an agent setting, e.g. --set eta=0.2 --set risk=wang --set risk_param=-0.75; "
                        "`ramac presets --settings --algo NAME` lists an agent's settings with their meaning")
    t.add_argument("--no-progress", action="store_true", help="do not draw the progress bar (for logs and CI)")
    t.add_argument("--data-parallel", action="store_true",
                   help="one run over the processes torchrun starts (one per GPU): --batch-size is the global "
                        "batch, split between them, gradients averaged; process 0 writes --run-dir (required). "
                        "e.g. torchrun --nproc_per_node 2 -m ramac train --data-parallel --batch-size 16384 ...")

    e = sub.add_parser("eval", help="evaluate a run directory's checkpoint",
                       description="Load RUN_DIR/checkpoint.pt, evaluate the policy, write eval-again.json and "
                                   "the task's figure as bandit-eval.png or risk_profile-eval.png (the training run's "
                                   "figures stay as they are).")
    e.add_argument("run_dir", type=Path, help="a directory written by `ramac train`")
    e.add_argument("--samples", type=int, default=10_000, help="bandit: policy actions to draw (default: 10000)")
    e.add_argument("--episodes", type=int, default=100,
                   help="MuJoCo or --env: episodes run side by side (default: 100)")
    e.add_argument("--env", metavar="GYM_ID",
                   help="evaluate in this Gymnasium env instead of the run's (its spaces must fit the policy)")
    e.add_argument("--full-horizon", action="store_true",
                   help="MuJoCo: run 1000-step episodes instead of the published horizon (HalfCheetah 200, others 500)")
    e.add_argument("--ood", action="store_true", help="MuJoCo: also report the OOD-action rate of each detector")
    e.add_argument("--seed", type=int, default=12345, help="evaluation seed (default: 12345)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    e.add_argument("--threads", type=int, help=THREADS_HELP)

    x = sub.add_parser("export", help="write a run's evaluated diffusion actor for the native sampler (native/)",
                       description="Write RUN_DIR's EMA denoiser, packed as the chain sampler reads it, with its "
                                   "schedule, shapes and observation normalisation: OUT/header.json + OUT/weights.bin "
                                   "(native/FORMAT.md), which libramac_sampler (CMakeLists.txt) loads.")
    x.add_argument("run_dir", type=Path, help="a directory written by `ramac train` (radac, neutral, bc, diffusion-ql)")
    x.add_argument("--out", type=Path, required=True, help="the export directory to write (new or empty)")
    x.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")

    d = sub.add_parser("data", help="build, list and inspect the Stochastic MuJoCo data sets (Minari format)",
                       description="Data sets are made locally from the behaviour policies shipped in the package.")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    dm = dsub.add_parser("make", help="roll out the behaviour policies in the risky env and store a Minari data set")
    dm.add_argument("preset", choices=_mujoco_presets(), help="which data set")
    dm.add_argument("--size", type=int, help="transitions (default: D4RL's size for the preset)")
    dm.add_argument("--seed", type=int, default=0, help="seed of resets, hazards and policy noise (default: 0)")
    dm.add_argument("--num-envs", type=int, default=8, help="environments stepped side by side (default: 8)")
    dm.add_argument("--workers", type=int, default=1,
                    help="processes rolling out pieces of each policy's share side by side; the data set depends "
                         "on it (recorded in its provenance; default: 1)")
    dm.add_argument("--overwrite", action="store_true", help="rebuild an existing data set")
    dm.add_argument("--threads", type=int, help=THREADS_HELP)
    dsub.add_parser("list", help="list the ramac data sets under $MINARI_DATASETS_PATH")
    di = dsub.add_parser("info", help="size, hazard, seed and provenance of a data set")
    di.add_argument("preset", choices=_mujoco_presets(), help="which data set")

    h = sub.add_parser("behaviour", help="train SAC behaviour policies and install them as package assets")
    hsub = h.add_subparsers(dest="behaviour_command", metavar="ACTION")
    hsub.required = True
    ht = hsub.add_parser("train", help="train (or resume) SAC on a plain v5 task, saving evaluated snapshots")
    ht.add_argument("env", choices=("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"), help="Gymnasium task")
    ht.add_argument("--steps", type=int, default=1_000_000, help="environment steps (default: 1,000,000)")
    ht.add_argument("--out", type=Path, help="run directory (default: runs/sac-ENV-seedN); resumes if it exists")
    ht.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    ht.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    ht.add_argument("--eval-every", type=int, default=10_000, help="steps between evaluated snapshots")
    ht.add_argument("--num-envs", type=int, default=8,
                    help="environments stepped side by side, with as many updates per round (default: 8)")
    ht.add_argument("--no-graph", action="store_true", help="CUDA: run the updates eagerly instead of as a graph")
    ht.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own, one per core)")
    ht.add_argument("--max-minutes", type=float,
                    help="stop (with a resumable state) after this much wall time; rerun the command to go on")
    hp = hsub.add_parser("pick", help="choose expert, medium and the replay series from a SAC run and install them")
    hp.add_argument("env", choices=("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"), help="Gymnasium task")
    hp.add_argument("run_dir", type=Path, help="a `ramac behaviour train` run directory")

    b = sub.add_parser("bench", help="benchmark kernels or the sampler against the reference path (JSON + table)",
                       description="Time each path in the same run and write JSON (with device and versions) "
                                   "plus a markdown table.")
    b.add_argument("what", choices=("kernels", "sampler", "train"), help="kernels: each fused op vs its reference "
                   "op and torch.compile of it; sampler: chain latency and throughput over batch sizes; train: "
                   "updates/s of the whole RADAC update per path (eager/graph, reference/kernels, bf16)")
    b.add_argument("--out", type=Path, help="JSON file to write (default: bench-WHAT-DEVICE.json)")
    b.add_argument("--batch-size", type=int, nargs="+",
                   help="batch sizes (default: sampler 1 256 4096 65536; train 256 1024 4096 16384)")
    b.add_argument("--seeds", type=int, nargs="+", metavar="K",
                   help="train: time K seeds for each K given, side by side and stacked (seed-updates/s and "
                        "memory; default batches 256 4096, path graph-compile-bf16 or the first of --paths)")
    b.add_argument("--layouts", nargs="+", choices=("side", "stacked"), default=["side", "stacked"],
                   help="train --seeds: side (a stream per seed in one graph) and/or stacked (parameters with a "
                        "seed dimension, ramac.train.stacked); default both")
    b.add_argument("--algo", default="radac", choices=ALGOS,
                   help="train: the agent whose update is timed; sampler: rafmac or fql time the flow student's "
                        "one-step sampler (FQL's 4 x 512 and a 3 x 256 one) beside RADAC's chain, others the chain")
    b.add_argument("--preset", default="halfcheetah-medium-expert",
                   help="train: the preset whose networks are timed, on synthetic data of HalfCheetah's shape")
    b.add_argument("--paths", nargs="+", help="train: which paths to time (default: all)")
    b.add_argument("--top-kernels", type=int, default=0, metavar="N",
                   help="train: also list the N GPU kernels that take the most time per update")
    b.add_argument("--ops", nargs="+", help="kernels: which ops to time (default: all)")
    b.add_argument("--steps", type=int, nargs="+", default=[5], help="sampler diffusion steps T (default: 5)")
    b.add_argument("--no-compile", action="store_true", help="skip the torch.compile provider (saves compile time)")
    b.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")

    f = sub.add_parser("profile", help="where an update's time goes: per-phase and kernel tables; NVTX for Nsight",
                       description="Run warm-up steps, then a timed window (on CUDA bracketed by "
                                   "cudaProfilerStart/Stop, with NVTX ranges per phase for Nsight), then a window "
                                   "under torch.profiler whose kernels are grouped by phase of the update "
                                   "(data, critic/loss, critic/next_action, critic/backward, critic/optimizer, "
                                   "actor/loss, actor/sample, actor/backward, actor/optimizer, ema_targets, "
                                   "metrics, ...): a per-phase table (kernels, time per update, share) and the "
                                   "costliest kernels, printed and with --out written as OUT.json and OUT.md. "
                                   "GPU time on CUDA, CPU time of the ops elsewhere. The update runs ungraphed: "
                                   "inside a CUDA graph (--graph) per-phase attribution is lost. Under Nsight pass "
                                   "--no-tables, e.g.\n"
                                   "  nsys profile --capture-range=cudaProfilerApi ramac profile --no-tables\n"
                                   "  ncu --profile-from-start off --nvtx ramac profile --steps 3 --no-tables",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("--preset", default="halfcheetah-medium-expert", help="networks of this preset (synthetic data)")
    f.add_argument("--batch-size", type=int, default=256, help="transitions per update (default: 256)")
    f.add_argument("--algo", default="radac", choices=ALGOS, help="the agent whose update is profiled")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="agent setting override")
    f.add_argument("--warmup", type=int, default=20, help="unprofiled warm-up steps (default: 20)")
    f.add_argument("--steps", type=int, default=50, help="steps of the timed (Nsight) window (default: 50)")
    f.add_argument("--table-steps", type=int, default=10,
                   help="steps of the torch.profiler window behind the tables (default: 10)")
    f.add_argument("--top", type=int, default=15, help="kernels listed in the kernels table (default: 15)")
    f.add_argument("--no-tables", action="store_true",
                   help="skip the torch.profiler window (under Nsight, which holds CUPTI itself)")
    f.add_argument("--out", type=Path, help="write OUT.json and OUT.md (tables, settings, device)")
    f.add_argument("--graph", action="store_true",
                   help="replay CUDA graphs (the per-phase table is then lost: every kernel is in update/other)")
    f.add_argument("--bf16", action="store_true", help="bf16 autocast")
    f.add_argument("--compile", action="store_true", help="torch.compile the update's pieces (as training does)")
    f.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")

    st = sub.add_parser("study", help="studies over a family of tasks; `ramac study bandit` and `ramac study agents` "
                                      "(see their --help)")
    stsub = st.add_subparsers(dest="study_command", metavar="STUDY")
    stsub.required = True
    sb = stsub.add_parser("bandit", help="train an agent on bandit variants for several seeds and lengths",
                          description="Train --algo on each bandit variant for each seed, evaluate every "
                                      "--eval-every steps, and write OUT/study.{md,csv,json} (share of actions in "
                                      "the best-tail mode and outside, reward mean and CVaR_0.1 per length, mean "
                                      "and 95 %% t-interval over seeds) and OUT/VARIANT.png. Resumable: rerun the "
                                      "same command to finish an interrupted study.")
    sb.add_argument("--variants", nargs="+", default=["all"],
                    help="bandit family members, or 'all' (default); `ramac study bandit --list` names them")
    sb.add_argument("--list", action="store_true", help="list the bandit family with each mode's law and exit")
    sb.add_argument("--algo", default="radac", choices=ALGOS, help="agent (default: radac)")
    sb.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    sb.add_argument("--steps", type=int, nargs="+", default=None,
                    help="lengths at which to report (default: 14000 42000 on a GPU, 5000 on a CPU)")
    sb.add_argument("--eval-every", type=int, help="steps between evaluations (default: gcd of --steps)")
    sb.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="agent setting override")
    _study_run_options(sb, Path("results/bandit-study"))
    sa = stsub.add_parser("agents", help="train every agent on a bandit for several seeds and compare them",
                          description="Train each --algos agent with its own preset settings on each --variants "
                                      "bandit for each seed, and write OUT/agents.{md,csv,json} (reward mean and "
                                      "CVaR_0.1, share of actions in each mode and outside: mean and 95 %% "
                                      "t-interval over seeds; the mode with most actions per seed; the behaviour "
                                      "SPEC 2.5 expects of the agent's risk setting and whether it came out) and "
                                      "OUT/agents.png (one panel per agent, and the shares as bars; with several "
                                      "variants OUT/agents-VARIANT.png each). Resumable: rerun the same command to "
                                      "finish an interrupted study.")
    sa.add_argument("--algos", nargs="+", default=["all"],
                    help=f"agents, or 'all' (default: every agent of the registry: {', '.join(ALGOS)})")
    sa.add_argument("--variants", nargs="+", default=["bandit"],
                    help="bandit family members, or 'all' (default: bandit); `ramac study bandit --list` names them")
    sa.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    sa.add_argument("--steps", type=int,
                    help="training steps of every run (default: the preset's: 14000, on a CPU 5000 unless --full)")
    sa.add_argument("--eval-every", type=int,
                    help="steps between evaluations and checkpoints (default: 2000, 1000 or 500, whichever divides "
                         "--steps, else only at the end)")
    sa.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="agent setting override, applied to the chosen agents that have the setting")
    _study_run_options(sa, Path("results/bandit-agents"))

    r = sub.add_parser("report", help="aggregate runs: one value per training seed, bootstrap CIs over seeds",
                       description="Group run directories by task and method (--algo), take each run's last "
                                   "evaluation (eval-again.json from `ramac eval` where present, else eval.json) as "
                                   "one seed, and write OUT.md (mean [95 % bootstrap CI of the mean over seeds]), "
                                   "OUT.json (every metric, per seed) and OUT.png (risk profile of the pooled "
                                   "returns, one curve per method).")
    r.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run directories (one per seed)")
    r.add_argument("--out", type=Path, default=Path("report"), help="output path without suffix (default: report)")
    r.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's resampling (default: 0)")

    sw = sub.add_parser("sweep", help="tasks x agents x seeds from a TOML file, resumable, sharded over torchrun "
                                      "processes; a table per task",
                        description="Train every (task, agent, seed) cell of CONFIG (TOML: name, tasks, agents, "
                                    "seeds, [train] run settings, [set] agent settings, [set.AGENT] per agent; "
                                    "see ramac/sweep.py) into OUT/runs/TASK-AGENT-seedN, skipping finished cells "
                                    "and resuming interrupted ones, then write OUT/TASK.md|csv|json (mean and 95 %% "
                                    "bootstrap CI over seeds per agent), OUT/TASK-risk.png, OUT/TASK-curves.png and "
                                    "OUT/sweep.json. Across processes: `torchrun --nproc_per_node N -m ramac sweep "
                                    "CONFIG` (one GPU per process; the seeds of a task and agent train side by side in one process, "
                                    "these units dealt round-robin; gloo on CPUs).")
    sw.add_argument("config", type=Path, help="the sweep's TOML file")
    sw.add_argument("--out", type=Path, help="output folder (default: results/NAME)")
    sw.add_argument("--device", default="auto", help="auto, cpu or cuda (under torchrun: cuda:LOCAL_RANK)")
    sw.add_argument("--full", action="store_true", help="full-size presets on a CPU too (default: CPU-sized)")
    sw.add_argument("--dry-run", action="store_true", help="list the cells and their state, and each unit's predicted seconds; train nothing")
    sw.add_argument("--lanes", type=int, metavar="N",
                    help="train nothing: print the tasks with cells left dealt to N processes side by side, as "
                         "bench/studies/gpu_sweep.sh's LANES (task lists separated by ';', balanced by the unit "
                         "times recorded in OUT/unit-times.json)")
    sw.add_argument("--time-limit", type=float, metavar="MINUTES",
                    help="start no (task, agent) unit after MINUTES of training; the tables of the complete tasks "
                         "are written and the rest is left for the next run of the same command")
    sw.add_argument("--budget", type=float, metavar="MINUTES",
                    help="wall-clock budget of this run (data sets included): start only the units predicted to "
                         "fit what is left (their duration recorded on this device in OUT/unit-times.json, else a "
                         "guess from the others), a unit too long with its first seeds that fit, skipping to later "
                         "ones that do")
    sw.add_argument("--tasks", nargs="+", metavar="TASK", help="train only these of the sweep's tasks (the tables "
                                                               "cover every complete task)")
    sw.add_argument("--tables-only", action="store_true",
                    help="train nothing: write the tables of every complete task from the run directories already "
                         "in OUT/runs (no data set or GPU needed; for a sweep trained elsewhere: add --full on a "
                         "CPU when the runs trained on a GPU and the file leaves their length to the presets)")
    sw.add_argument("--make-data", action="store_true",
                    help="build the missing Stochastic MuJoCo data sets (`ramac data make`): one process builds each "
                         "just before its task's first unit that trains (a --budget counts its recorded build "
                         "time), several processes build them all first (process 0)")
    sw.add_argument("--stack-seeds", action="store_true",
                    help="each unit's seeds stacked (one computation over weights with a seed dimension) instead "
                         "of side by side (RAMAC_STACK_SEEDS=1; README)")

    p = sub.add_parser("presets", help="list task presets, or show one's resolved settings")
    p.add_argument("name", nargs="?", help="a preset name")
    p.add_argument("--algo", default="radac", choices=ALGOS, help="algorithm whose overrides to apply")
    p.add_argument("--cpu", action="store_true", help="show the CPU-sized variant")
    p.add_argument("--settings", action="store_true",
                   help="list the agent's settings (--algo) with their defaults and meaning, for --set")
    return parser


# the on/off flags of `ramac train`: the TrainConfig setting each gives and its value when given
TRAIN_FLAGS = {"no_graph": ("graph", False), "bf16": ("bf16", True), "no_compile": ("compile", False),
               "obs_norm": ("obs_norm", True), "tensorboard": ("tensorboard", True)}
# options that would change a run: --resume refuses them instead of ignoring them
RUN_OPTIONS = ("task", "algo", "run_dir", "seeds", "set", "full", *TRAIN_FLAGS) + tuple(
    name for name in TRAIN_OPTIONS if name not in ("steps", "device"))


def cmd_train(args) -> int:
    from . import kernels
    from .config import build_configs
    from .train import resume, train
    from .train.group import parse_seeds, resume_seeds, seed_dirs, seed_runs_in, train_seeds
    from .utils import resolve_device

    if args.resume:
        given = ["--" + name.replace("_", "-") for name in RUN_OPTIONS if getattr(args, name) not in (None, False, [])]
        if given:
            raise ValueError(f"--resume continues {args.resume} with the settings it was started with; "
                             f"{', '.join(given)} would change them (only --steps, --device, --kernels and "
                             f"--no-progress go with --resume): start a new run to change settings")
    kernels.set_backend(args.kernels)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    if seeds is not None and args.seed is not None:
        raise ValueError("give --seed or --seeds, not both")
    if args.stack_seeds:
        if seeds is None and not args.resume:
            raise ValueError("--stack-seeds stacks the seeds of --seeds (or of a resumed --seeds directory)")
        os.environ["RAMAC_STACK_SEEDS"] = "1"
    shard = None
    if args.data_parallel:
        from .train import distributed

        if seeds is not None:
            raise ValueError("--data-parallel trains one run; --seeds trains several side by side: give one of them")
        if args.run_dir is None and args.resume is None:
            raise ValueError("--data-parallel needs --run-dir (every process must name the same directory)")
        if args.resume and not (args.resume / "checkpoint.pt").exists() and seed_runs_in(args.resume):
            raise ValueError(f"--data-parallel trains one run; {args.resume} holds seeds side by side: resume them "
                             f"without --data-parallel")
        kind = resolve_device(args.device or "auto").type
        shard = distributed.init(kind)
        if kind == "cuda":
            args.device = f"cuda:{shard.local_rank}"
        args.no_progress = args.no_progress or not shard.main
    if args.resume and not (args.resume / "checkpoint.pt").exists() and seed_runs_in(args.resume):
        return _report_seeds(resume_seeds(args.resume, steps=args.steps, progress=not args.no_progress,
                                          device=args.device))
    if args.resume:
        result = resume(args.resume, steps=args.steps, progress=not args.no_progress, device=args.device,
                        warn=lambda message: print(f"ramac train: warning: {message}", file=sys.stderr), shard=shard)
    else:
        from .config import preset_for_dataset

        algo = args.algo or "radac"
        task = args.task or (preset_for_dataset(args.dataset, args.env) if args.dataset else "bandit")
        if args.dataset:
            print(f"ramac train: data set {args.dataset}, evaluated in {args.env or 'the env it records, if any'}; "
                  f"settings of the {task} preset{'' if args.task else ' (by the env name; --task NAME picks another)'}",
                  flush=True)
        device = resolve_device(args.device or "auto")
        train_over = {name: getattr(args, name) for name in TRAIN_OPTIONS if getattr(args, name) is not None}
        train_over.update(value for flag, value in TRAIN_FLAGS.items() if getattr(args, flag))
        cpu_sized = device.type == "cpu" and not args.full
        agent_cfg, train_cfg = build_configs(task, algo, cpu_sized, _parse_set(args.set), train_over)
        print(f"ramac train: {train_cfg.task} / {train_cfg.algo} on {device}"
              f"{' (CPU-sized preset; --full for the full one)' if cpu_sized and task == 'bandit' else ''}, "
              f"{train_cfg.steps} steps{f', seeds {args.seeds} side by side' if seeds else ''}", flush=True)
        if seeds is not None:
            dirs = seed_dirs(args.run_dir, train_cfg, seeds)
            return _report_seeds(train_seeds(agent_cfg, train_cfg, seeds, dirs, progress=not args.no_progress))
        result = train(agent_cfg, train_cfg, args.run_dir, progress=not args.no_progress, shard=shard)
    if shard is not None and not shard.main:
        return 0  # process 0 reports
    print(f"done: {result.steps} steps in {result.wall_time_s:.0f} s")
    print(_summary(result.final_eval))
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in result.run_dir.iterdir() if p.name != ".lock")
    print(f"run directory: {result.run_dir}  ({', '.join(held)})")
    return 0


def _report_seeds(results) -> int:
    """One line per seed; exit status 1 when a seed diverged (the others finished)."""
    from .train.group import Diverged

    done = [r for r in results if not isinstance(r, Diverged)]
    if done:
        print(f"done: {len(done)} seeds x {done[0].steps} steps in {done[0].wall_time_s:.0f} s")
    for r in results:
        if isinstance(r, Diverged):
            print(f"{r.run_dir.name}: diverged at step {r.step}: {r.error}")
        else:
            print(f"{r.run_dir.name}: " + _summary(r.final_eval).replace("\n", "\n  "))
    print(f"run directories: {results[0].run_dir.parent}/seed*")
    return 1 if len(done) < len(results) else 0


def _summary(metrics: dict) -> str:
    from .envs import bandit
    from .evaluation import summary_line

    if "share/best_tail" in metrics:
        modes = [k.split("/")[1] for k in metrics if k.startswith("quantile/") and k.endswith("critic1/0.5")]
        if not modes:  # an agent without critics
            return bandit.summary_line(metrics)
        mode = "R" if "R" in modes else modes[0]
        q = [f"{metrics[f'quantile/{mode}/critic1/{t:g}']:.1f}" for t in bandit.READOUT_TAUS]
        return (bandit.summary_line(metrics) + f"\ncritic 1 quantiles at {mode} (tau "
                + ", ".join(f"{t:g}" for t in bandit.READOUT_TAUS) + "): " + ", ".join(q))
    if not metrics:
        return "no evaluation (no env: give --env to evaluate)"
    line = summary_line(metrics)
    ood = {k: round(v, 4) for k, v in metrics.items() if k.startswith("ood/") and isinstance(v, float)}
    return line + (f"\nOOD rates: {ood}" if ood else "")


def cmd_study(args) -> int:
    from .envs.bandit_family import FAMILY

    if args.study_command == "agents":
        _check_counts(args, "steps", "eval_every", "concurrent", "threads")
        from .study_agents import markdown as agents_markdown, run_agents_study

        _use_threads(args.threads)
        report = run_agents_study(args.algos, args.variants, args.seeds, args.steps, args.eval_every,
                                  _parse_set(args.set), args.out, args.runs, args.device, args.full,
                                  args.concurrent, args.compile)
        print(agents_markdown(report))
        print(f"wrote {args.out}/agents.md, agents.csv, agents.json and "
              f"{'agents.png' if len(report['variants']) == 1 else 'agents-VARIANT.png per variant'}")
        return 0
    if args.list:
        for spec in FAMILY.values():
            modes = "; ".join(f"{m.name} {m.centre} r={m.radius:g} {m.law}" for m in spec.modes)
            print(f"{spec.name:18s} best tail: {spec.best_mode('cvar'):3s} best mean: {spec.best_mode('mean'):3s} "
                  f"| {modes}; outside {spec.ood_reward:g}  ({spec.note})")
        return 0
    if any(n < 1 for n in args.steps or []):
        raise ValueError(f"--steps must be at least 1, got {' '.join(map(str, args.steps))}")
    if any(seed < 0 for seed in args.seeds):
        raise ValueError(f"--seeds must be at least 0, got {' '.join(map(str, args.seeds))}")
    _check_counts(args, "eval_every", "concurrent", "threads")
    import torch

    from .study import markdown, run_study
    from .utils import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    variants = list(FAMILY) if args.variants == ["all"] else args.variants
    steps = args.steps or ([14_000, 42_000] if device.type == "cuda" or args.full else [5_000])
    report = run_study(variants, args.algo, args.seeds, steps, args.eval_every, _parse_set(args.set), args.out,
                       device, args.full, args.concurrent, args.compile, args.runs)
    print(markdown(report))
    print(f"wrote {args.out}/study.md, study.csv, study.json and one figure per variant")
    return 0


def cmd_eval(args) -> int:
    from .train.reevaluate import reevaluate
    from .utils import resolve_device

    _check_counts(args, "samples", "episodes", "threads")
    _check_seed(args.seed)
    _use_threads(args.threads, 1)
    step, metrics, figures = reevaluate(args.run_dir, resolve_device(args.device), episodes=args.episodes,
                                        samples=args.samples, seed=args.seed, ood=args.ood,
                                        full_horizon=args.full_horizon, env=args.env)
    print(f"{args.run_dir} (step {step}):")
    print(_summary(metrics))
    print(f"wrote eval-again.json{''.join(', ' + name for name in figures)}")
    return 0


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")


THREADS_HELP = ("torch CPU threads (default: 1: the policy runs on small batches between env steps, where more "
                "threads mostly wait on each other, and on a busy machine on the other processes)")


def _use_threads(threads, default=None) -> None:
    """torch CPU threads: --threads, else the command's default (None: torch's own)."""
    if threads or default:
        import torch

        torch.set_num_threads(threads or default)


def _check_counts(args, *names) -> None:
    """Options that count something must be at least 1 (checked before anything runs)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def cmd_data(args) -> int:
    if args.data_command == "make":  # before anything imports or builds
        _check_counts(args, "size", "num_envs", "threads", "workers")
        _check_seed(args.seed)
        _use_threads(args.threads, 1)
    from .data import stochastic_mujoco as datasets

    if args.data_command == "list":
        names = datasets.list_local()
        print("\n".join(names) if names else f"no ramac data sets under {datasets.datasets_root()}")
        return 0
    if args.data_command == "info":
        print(json.dumps(datasets.info(args.preset), indent=2))
        return 0
    rec = datasets.make(args.preset, args.size, args.seed, args.num_envs, overwrite=args.overwrite,
                        workers=args.workers)
    parts = ", ".join(f"{p['policy']}: {p['transitions']}" for p in rec["parts"])
    print(f"built {rec['dataset_id']}: {rec['size']} transitions in {rec['build_seconds']:.0f} s ({parts})")
    return 0


def cmd_behaviour(args) -> int:
    from .datagen import behaviour
    from .datagen.sac import SACConfig, train_sac
    from .utils import resolve_device

    if args.behaviour_command == "pick":
        if not (args.run_dir / "history.json").exists():
            raise FileNotFoundError(f"{args.run_dir} is not a `ramac behaviour train` run directory (it has no "
                                    f"history.json)")
        rec = behaviour.pick(args.run_dir, args.env, command=" ".join(sys.argv))
        print(json.dumps({k: rec[k] for k in ("expert", "medium")}, indent=2))
        print(f"installed in {behaviour.policy_dir(args.env)} ({len(rec['replay'])} replay snapshots)")
        return 0
    _check_counts(args, "threads")
    _use_threads(args.threads)
    out = args.out or Path("runs") / f"sac-{args.env}-seed{args.seed}"
    cfg = SACConfig(env_id=args.env, total_steps=args.steps, seed=args.seed, eval_every=args.eval_every,
                    num_envs=args.num_envs, graph=not args.no_graph, device=str(resolve_device(args.device)))
    train_sac(cfg, out, max_minutes=args.max_minutes)
    print(f"SAC run in {out}; install its policies with: ramac behaviour pick {args.env} {out}")
    return 0


def cmd_export(args) -> int:
    from .export import export_run

    h = export_run(args.run_dir, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}/header.json and weights.bin: {h['agent']} actor (step {h['source']['step']}), state "
          f"{h['state_dim']}, action {h['action_dim']}, hidden {h['hidden']}, T = {h['n_steps']}")
    return 0


def cmd_bench(args) -> int:
    from .perf import bench
    from .utils import atomic_write_bytes, device_name, resolve_device

    device = resolve_device(args.device)
    if device.type != "cuda":
        raise ValueError("ramac bench times the Triton kernels, which run only on a CUDA device; none found here")
    name = device_name(device)
    print(f"ramac bench {args.what} on {name} ({device})", flush=True)
    if args.what == "kernels":
        rows = bench.bench_kernels(device, compile_ref=not args.no_compile, ops=args.ops)
        cols = ["op", "shape", "mode", "launch", "provider", "median_us", "speedup_vs_reference", "speedup_vs_compile"]
        settings = {"B": 16_384, "K": 32}
    elif args.what == "train" and args.seeds:
        batches = tuple(args.batch_size or (256, 4096))
        path = (args.paths or ["graph-compile-bf16"])[0]
        rows = bench.bench_train_seeds(device, seeds=tuple(args.seeds), batches=batches, path=path,
                                       preset=args.preset, algo=args.algo, layouts=tuple(args.layouts),
                                       top_kernels=args.top_kernels)
        cols = ["op", "batch", "seeds", "layout", "path", "seed_updates_per_s", "updates_per_s", "group_updates_per_s",
                "vs_single_seed", "vs_side_by_side", "median_us", "peak_memory_mb", "setup_s"]
        if args.top_kernels:
            cols += ["kernels_per_update", "gpu_busy_us_per_update"]
        settings = {"batches": batches, "seeds": args.seeds, "path": path, "preset": args.preset, "algo": args.algo,
                    "data": "synthetic S=17 A=6", "risk_term": "on" if args.algo != "bc" else "none"}
    elif args.what == "train":
        batches = tuple(args.batch_size or (256, 1024, 4096, 16_384))
        rows = bench.bench_train(device, batches=batches, paths=tuple(args.paths or bench.TRAIN_PATHS),
                                 preset=args.preset, top_kernels=args.top_kernels, algo=args.algo)
        cols = ["batch", "path", "updates_per_s", "samples_per_s", "median_us", "speedup_vs_reference",
                "kernels_per_update", "gpu_busy_us_per_update", "setup_s"]
        settings = {"batches": batches, "preset": args.preset, "algo": args.algo, "data": "synthetic S=17 A=6",
                    "risk_term": "on" if args.algo != "bc" else "none"}
    else:
        batches = tuple(args.batch_size or (1, 256, 4096, 65_536))
        if args.algo in ("rafmac", "fql"):
            rows = bench.bench_student(device, batches=batches, radac_steps=args.steps[0],
                                       compile_ref=not args.no_compile)
            cols = ["op", "hidden", "layers", "T", "batch", "launch", "provider", "median_us", "actions_per_s",
                    "tflop_per_s", "speedup_vs_reference", "ratio_vs_radac_sampler"]
            settings = {"batches": batches, "algo": args.algo, "state_dim": 17, "action_dim": 6,
                        "student_shapes": bench.STUDENT_SHAPES, "radac_steps": args.steps[0], "radac_hidden": 256}
        else:
            rows = bench.bench_sampler(device, batches=batches, steps=tuple(args.steps),
                                       compile_ref=not args.no_compile)
            cols = ["T", "batch", "launch", "provider", "median_us", "actions_per_s", "speedup_vs_reference"]
            settings = {"batches": batches, "steps": args.steps, "state_dim": 17, "action_dim": 6, "hidden": 256}
    out = args.out or Path(f"bench-{args.what}-{name.replace(' ', '_')}.json")
    bench.write_results(out, args.what, rows, device, settings)
    table = bench.markdown_table(rows, cols + (["error"] if any("error" in r for r in rows) else []))
    table += bench.top_kernel_tables(rows)
    atomic_write_bytes(out.with_suffix(".md"), f"# ramac bench {args.what} on {name}\n\n{table}\n".encode())
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


def cmd_profile(args) -> int:
    from .perf.profile import markdown, run_profile
    from .utils import atomic_write_bytes, atomic_write_json, device_name, provenance, resolve_device

    device = resolve_device(args.device)
    out = run_profile(args.preset, args.batch_size, args.warmup, args.steps, args.graph, args.bf16, device=device,
                      compile=args.compile, algo=args.algo, table_steps=args.table_steps, top=args.top,
                      tables=not args.no_tables, overrides=_parse_set(args.set))
    if args.no_tables:
        print(json.dumps(out))
        return 0
    text = f"# ramac profile on {device_name(device)}\n\n" + markdown(out)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out.with_suffix(".json"), {**out, "provenance": provenance(device)})
        atomic_write_bytes(args.out.with_suffix(".md"), text.encode())
        print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    _check_seed(args.seed)
    result = write_report(args.run_dirs, args.out, args.seed)
    print(result["markdown"])
    written = [str(args.out.with_suffix(s)) for s in (".md", ".json")] + ([result["figure"]] if result["figure"] else [])
    print(f"wrote {', '.join(written)}")
    return 0


def cmd_sweep(args) -> int:
    from .sweep import SweepError, load_spec, run_sweep
    from .utils import resolve_device

    spec = load_spec(args.config)
    out = args.out or Path("results") / spec.name
    if args.stack_seeds:
        os.environ["RAMAC_STACK_SEEDS"] = "1"
    if args.lanes is not None:
        from .sweep import lanes

        print(";".join(" ".join(tasks) for tasks in lanes(spec, out, args.lanes, args.device, full=args.full)))
        return 0
    if args.dry_run:
        from .sweep import describe

        print("\n".join(describe(spec, out, args.device, full=args.full)))  # the presets the run would use
        return 0
    if args.tables_only:
        from .sweep import sweep_tables

        full = args.full or resolve_device(args.device).type != "cpu"  # (the sizing the runs trained with)
        report = sweep_tables(spec, out, full=full, log=print)
        print(f"wrote {out}/<task>.md|csv|json, <task>-risk.png, <task>-curves.png and sweep.json "
              f"({len(report['tasks'])} complete tasks; {len(report['unfinished'])} cells left)")
        return 0
    for flag, value in (("--time-limit", args.time_limit), ("--budget", args.budget)):
        if value is not None and not value > 0:
            raise SweepError(f"{flag} must be positive minutes, got {value:g}")

    def line(msg: str) -> None:  # one write per line: the processes of a torchrun share the terminal
        sys.stdout.write(f"{msg}\n")
        sys.stdout.flush()

    report = run_sweep(spec, out, args.device, full=args.full, make_data=args.make_data, log=line,
                       time_limit_s=None if args.time_limit is None else 60 * args.time_limit, tasks=args.tasks,
                       budget_s=None if args.budget is None else 60 * args.budget)
    if report is not None:
        print(f"wrote {out}/<task>.md|csv|json, <task>-risk.png, <task>-curves.png and sweep.json "
              f"({len(report['tasks'])} complete tasks; {len(report['unfinished'])} cells left)")
    return 0


def cmd_presets(args) -> int:
    from .config import build_configs, preset_names, to_dict

    if args.settings:
        from dataclasses import fields

        from .agents.configs import field_help
        from .agents.registry import config_class

        cls = config_class(args.algo)
        helps = field_help(cls)
        print(f"{args.algo} settings ({cls.__name__}); set with --set KEY=VALUE")
        for f in fields(cls):
            print(f"  {f.name:20s} {f.default!s:10s} {helps.get(f.name, '')}")
        return 0
    if not args.name:
        print("\n".join(preset_names()))
        return 0
    agent, train = build_configs(args.name, args.algo, args.cpu)
    print(json.dumps({"agent": to_dict(agent), "train": to_dict(train)}, indent=2))
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"train": cmd_train, "eval": cmd_eval, "bench": cmd_bench, "profile": cmd_profile,
                "data": cmd_data, "behaviour": cmd_behaviour, "export": cmd_export,
                "presets": cmd_presets, "study": cmd_study, "report": cmd_report, "sweep": cmd_sweep}
    from .train import NonFiniteLossError, RunDirError

    try:
        return handlers[args.command](args)
    except (ValueError, OSError, NonFiniteLossError, RunDirError) as e:  # OSError: FileNotFoundError, disk full, ...
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"ramac {args.command}: error: {message or type(e).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
