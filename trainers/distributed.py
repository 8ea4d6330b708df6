"""Data-parallel training under ``torchrun``: a thin adapter over the one training loop.

The loop (``trainers.anchored.train_anchored``) takes a ``DistContext``. With one process
it is ``SINGLE`` and every method is a no-op, so the in-process path is the loop as it
always was. Under ``torchrun --nproc_per_node N`` (which sets ``RANK``/``WORLD_SIZE``)
``from_env()`` joins the process group (gloo for a loop on CPU, NCCL for one on GPU) and
the loop

* deals each global batch to the ranks row by row (``shard``: rank r takes rows r, r+N, …,
  as ``DistributedSampler`` deals a shuffled epoch), so N processes see the batches one
  process sees, in the same order;
* wraps its step in ``DistributedDataParallel``, which averages the gradients, with the
  loss scaled so that the average equals one process's mean over the whole batch;
* lets rank 0 alone evaluate; its decision to stop reaches every rank (``agree``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI starts without it
    import torch
    from torch import Tensor, nn

log = logging.getLogger(__name__)


class DistributedTrainingFailed(RuntimeError):
    """A ``torchrun`` launch exited non-zero (a rank died or raised): nothing was saved."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run; ``SINGLE`` for plain one-process runs."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that evaluates, logs progress and saves."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, idx: Tensor) -> tuple[Tensor, bool]:
        """This rank's rows of a global batch and whether it holds any.

        A last batch smaller than the world leaves some ranks without rows; they still
        take part in the gradient average (DDP needs every rank), with one stand-in row
        whose loss they weight by zero (``live`` False).
        """
        if not self.active:
            return idx, True
        mine = idx[self.rank :: self.world]
        return (mine, True) if len(mine) else (idx[:1], False)

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` under ``DistributedDataParallel`` (itself with one process).

        ``find_unused_parameters``: a step may leave parts unused (the CVR head when it is
        not trained jointly); buffers are fixed before training, so they are not
        re-broadcast at each step (DDP copies rank 0's parameters and buffers once here).
        """
        if not self.active:
            return module
        import torch
        from torch.nn.parallel import DistributedDataParallel

        on_gpu = any(p.is_cuda for p in module.parameters())
        device = torch.cuda.current_device() if on_gpu else None
        return DistributedDataParallel(
            module,
            device_ids=None if device is None else [device],
            find_unused_parameters=True,
            broadcast_buffers=False,
        )

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (a stop decision only rank 0 can make)."""
        if not self.active:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], device=_device())
        dist.broadcast(t, src=0)
        return bool(t.item())

    def sum(self, value: float) -> float:
        """``value`` summed over the ranks (an epoch's loss)."""
        if not self.active:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=_device())
        dist.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()


SINGLE = DistContext()


def _device() -> torch.device:
    """Where a collective's tensor must be: on the GPU for NCCL, on the CPU for gloo."""
    import torch
    import torch.distributed as dist

    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


def under_torchrun() -> bool:
    """Whether this process is a rank that ``torchrun`` started."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def from_env(device: str = "cpu", timeout_s: float = 1800.0) -> DistContext:
    """Join the process group ``torchrun`` described in the environment (``SINGLE`` if none).

    ``device``: where the loop keeps its model: ``cpu`` (gloo) or ``cuda`` (NCCL, each rank
    on GPU ``LOCAL_RANK``). The content-anchored loop trains on the CPU, so its callers
    ask for gloo even on a GPU host (NCCL reduces only GPU tensors). ``timeout_s`` bounds a
    collective waiting for a rank that hangs; a rank that dies is noticed at once by
    ``torchrun``, which stops the others.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    ctx = DistContext(dist.get_rank(), dist.get_world_size())
    log.info("distributed: rank %d of %d (%s)", ctx.rank, ctx.world, backend)
    return ctx


def close(ctx: DistContext) -> None:
    if ctx.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def torchrun_command(nproc: int, module_args: list[str]) -> list[str]:
    """``torchrun --standalone --nproc_per_node N -m trainers …`` with this interpreter.

    ``--standalone``: a one-machine rendezvous on a free port. ``torch.distributed.run``
    is what the ``torchrun`` script runs; calling it through ``sys.executable`` keeps the
    ranks in this environment.
    """
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node", str(nproc), "-m", "trainers", *module_args,
    ]  # fmt: skip


def run_torchrun(nproc: int, module_args: list[str], timeout_s: float | None = None) -> None:
    """Launch ``python -m trainers …`` on ``nproc`` ranks and wait; raise if any failed.

    The ranks inherit stdout/stderr, so their logs are the job's. A rank that dies makes
    ``torchrun`` stop the others and exit non-zero: ``DistributedTrainingFailed``.
    """
    cmd = torchrun_command(nproc, module_args)
    log.info("launching %d training processes: %s", nproc, " ".join(cmd[1:]))
    # the ranks import the code this process runs, wherever it was started from
    root = str(Path(__file__).resolve().parent.parent)
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    }
    try:
        rc = subprocess.run(cmd, timeout=timeout_s, check=False, env=env).returncode
    except subprocess.TimeoutExpired:
        raise DistributedTrainingFailed(
            f"torchrun with {nproc} processes did not finish within {timeout_s:.0f} s"
        ) from None
    if rc != 0:
        raise DistributedTrainingFailed(
            f"torchrun with {nproc} processes exited with status {rc} (a rank died or "
            "raised; its log is above); nothing was saved"
        )
