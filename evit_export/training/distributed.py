"""Where a run executes: one process, or DistributedDataParallel under ``torchrun``
(gloo on CPU, nccl on GPU), the device of each process and its CPU threads."""
from __future__ import annotations

import os

import torch

from evit_export.core.errors import UserError


class Distributed:
    """The torchrun environment of this process (a single process when absent)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
        self.enabled = self.world > 1
        self.started = False

    @property
    def main(self) -> bool:
        """Rank 0: the process that evaluates, writes the run directory and prints."""
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        if not self.enabled:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            self.started = True

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def mean(self, *values: float) -> tuple[float, ...]:
        """The mean of each value over all processes (the values themselves when alone)."""
        if not self.enabled:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return tuple((t / self.world).tolist())

    def stop(self) -> None:
        if self.started:
            import torch.distributed as dist

            dist.destroy_process_group()


def default_threads(processes: int = 1) -> int:
    """CPU threads per training process: the cores split between the processes, less
    the cores other programs keep busy (1-minute load average). On a shared machine
    an OpenMP thread whose core is taken stalls every parallel region of the step;
    measured on the 2-core development machine under load ~2: 2 threads 6-16 img/s,
    1 thread ~100 img/s."""
    cores = os.cpu_count() or 1
    share = max(1, cores // max(1, processes))
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    idle = int(cores - busy + 0.5)
    return max(1, min(share, idle))


def pick_device(requested: str | None, dist: Distributed) -> torch.device:
    if requested:
        dev = torch.device(requested)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device={requested}: no CUDA GPU here; leave device= out to train on the CPU")
    else:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and dist.enabled:
        dev = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(dev)
    return dev


def place(requested_device: str | None, threads: int | None, dist: Distributed) -> torch.device:
    """Pick this process's device and CPU thread count, then join the process group."""
    device = pick_device(requested_device, dist)
    if threads:
        torch.set_num_threads(threads)
    elif device.type == "cpu":
        torch.set_num_threads(default_threads(dist.local_world))
    dist.start(device)
    return device
