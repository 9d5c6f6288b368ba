"""Data-parallel training of one run over several processes (one per GPU, launched by torchrun):

    torchrun --nproc_per_node 2 -m ramac train --task halfcheetah-medium-expert --batch-size 16384 --data-parallel

Every process holds the whole agent and the whole data set. At each update the global batch of
--batch-size transitions is split into one slice per process; each process computes its slice's
losses, and the gradients of every optimiser step are averaged over the processes (one
all-reduce of one flat buffer per network, before clipping) so that every process takes the same
step from the same gradients: the parameters stay identical without being broadcast. The random
numbers are ramac.noise draws of the whole global batch, each process keeping its slice, so
world processes on B / world transitions each compute what one process computes on B (up to
the order of floating-point sums; mean losses, the BC filters' weights and Diffusion-QL's Q
normalisation are computed per slice, which for the filters and the normalisation is an
approximation of the global batch's). Process 0 writes the run directory (metrics, checkpoints,
evaluations); the others train alongside without writing. The logged metrics are means over every
process's slice, and a non-finite loss on any process stops all of them at the same step. A
checkpoint holds nothing of the world size, so a run resumes on any number of processes with the
same global batch.

Backends: NCCL on CUDA (the all-reduce is recorded in the update's CUDA graph), gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


# how long a collective waits for the slowest process: a sweep's process 0 builds data sets while
# the others wait at a barrier, and units of K seeds end far apart (the default is 10 minutes)
TIMEOUT = timedelta(hours=6)


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets its variables)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init(device_type: str) -> Shard:
    """Join the process group torchrun describes (NCCL for CUDA, gloo otherwise); returns this
    process's shard. A CUDA process uses the GPU of its local rank."""
    if not launched():
        raise ValueError("--data-parallel runs under torchrun, one process per GPU, e.g. "
                         "`torchrun --nproc_per_node 2 -m ramac train --data-parallel ...`")
    shard = Shard(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(shard.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=TIMEOUT)
    return shard


def local_batch(batch_size: int, shard: Shard) -> int:
    if batch_size % shard.world:
        raise ValueError(f"--batch-size {batch_size} does not split into {shard.world} equal parts (one per "
                         f"process); give a multiple of {shard.world}")
    return batch_size // shard.world


class GradMean:
    """Average a network's gradients over the processes: one all-reduce of one flat buffer."""

    def __init__(self, world: int, group=None):
        self.world, self.group = world, group

    def __call__(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=self.group)
        flat.div_(self.world)
        return [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]), grads)]


def metrics_over_processes(sums: torch.Tensor, counts: torch.Tensor, first_bad: torch.Tensor):
    """DeviceMetrics.reduce of a data-parallel run: every process's metric sums and counts added
    up (each slice's mean loss averaged over the equal slices: the global batch's mean) and the
    earliest step at which any process saw a non-finite loss (-1: none), so that every process
    logs the same numbers and all of them stop together. (sums and counts: read()'s own stacks,
    reduced in place.)"""
    dist.all_reduce(sums)
    dist.all_reduce(counts)
    never = torch.iinfo(torch.long).max
    bad = torch.where(first_bad < 0, torch.full_like(first_bad, never), first_bad)
    dist.all_reduce(bad, op=dist.ReduceOp.MIN)
    return sums, counts, torch.where(bad == never, torch.full_like(bad, -1), bad)


def shard_agent(agent, shard: Shard) -> None:
    """Make an agent one process's part of a data-parallel run: its draws are its slice of the
    global batch's, and its optimiser steps take the gradients averaged over the processes."""
    agent.noise_shard = (shard.rank, shard.world)
    agent.grad_sync = GradMean(shard.world) if shard.world > 1 else None


def same_everywhere(tensor: torch.Tensor) -> bool:
    """Whether every process holds the same values (a check for tests and debugging)."""
    lo, hi = tensor.detach().clone(), tensor.detach().clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))
