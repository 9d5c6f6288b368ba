"""Training: the run loop (loop.py), the updaters that run an agent's update (updaters.py:
eager, CUDA graph, torch.compile, bf16) and the tasks (tasks.py: data plus evaluation)."""

from .loop import (CHECKPOINT, CONFIG, METRICS, NonFiniteLossError, RunDirError, RunResult, Trainer,
                   default_run_dir, load_agent, read_metrics, resume, train)

__all__ = ["CHECKPOINT", "CONFIG", "METRICS", "NonFiniteLossError", "RunDirError", "RunResult", "Trainer",
           "default_run_dir", "load_agent", "read_metrics", "resume", "train"]
