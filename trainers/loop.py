"""The plain training loop, the LR schedule and progress logging (nanoGPT style)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


def cosine_with_warmup(step: int, total: int, warmup: int, floor: float = 0.05) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(
    params: Iterable[nn.Parameter], lr: float, weight_decay: float, total: int, warmup: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with a cosine schedule and warm-up; no decay on biases, norms and 1-d params."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, total, warmup))
    return opt, sched


class Progress:
    """Periodic log line with rate and ETA for long runs."""

    def __init__(self, total: int, name: str, every_s: float = 15.0) -> None:
        self.total, self.name, self.every_s = total, name, every_s
        self.start = self.last = time.monotonic()
        self.done = 0

    def step(self, n: int = 1, **fields: float) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            extra = " ".join(f"{k}={v:.4f}" for k, v in fields.items())
            log.info(
                "%s step %d/%d (%.1f steps/s, ETA %.0fs) %s",
                self.name, self.done, self.total, rate, eta, extra,
            )  # fmt: skip


def train_loop(
    loss_fn: Callable[[dict[str, Tensor]], Tensor],
    batches: Iterable[dict[str, Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: list[nn.Parameter],
    progress: Progress | None = None,
    grad_clip: float = 1.0,
) -> float:
    """One pass over ``batches``; returns the mean loss."""
    total, n = 0.0, 0
    for batch in batches:
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        scheduler.step()
        total += float(loss.detach())
        n += 1
        if progress is not None:
            progress.step(loss=float(loss.detach()))
    return total / max(n, 1)
