"""Process-wide runtime set-up shared by every entry point (CLI, tests, benchmarks)."""

from __future__ import annotations

import sys


def keep_triton_out() -> None:
    """Run torch without triton: nothing here compiles, and triton only adds exit noise.

    transformers' BERT imports ``torch._dynamo`` (masking utils), whose import probes for
    triton; once loaded, triton's nanobind extension prints a screen of ``nanobind:
    leaked ...`` lines at interpreter exit. Eager torch on CPU and GPU needs no triton.
    """
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # import -> ImportError


def limit_threads(blas: int, torch_threads: int) -> dict[str, int]:
    """Size the process's BLAS pools and torch's intra-op pool for a latency-bound server.

    A serving request does small matrix products (100 x 64 by 64 x 128). OpenBLAS
    splits those over one thread per core, and its threads spin while they wait for each
    other: on a machine whose cores are busy with other work, a request then waits for
    a descheduled helper thread. Measured on 2 shared cores at load 6.5: p99 48 ms with
    the default pools against 0.8 ms with one thread (docs/ranking.md, "Tail latency").
    ``0`` leaves a pool as it is. Returns the sizes now in force (``-1``: not loaded).
    """
    out = {"blas": -1, "torch": -1}
    if blas > 0:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=blas, user_api="blas")
    try:
        from threadpoolctl import threadpool_info

        sizes = [int(p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas"]
        out["blas"] = max(sizes, default=-1)
    except ImportError:  # threadpoolctl is a dependency; without it report "unknown"
        pass
    try:
        import torch
    except ImportError:  # the ranking reader can run without the model extra's torch
        return out
    if torch_threads > 0 and torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    out["torch"] = torch.get_num_threads()
    return out


def settle_heap() -> int:
    """Collect once, then move every object alive now out of the collector's reach.

    A serving process imports torch, Feast and pandas: about 300,000 tracked objects,
    which a full (generation 2) collection walks in 180 ms of CPU on this project's
    2-core machine. Any request that triggers one waits for it. Called once the process
    is warm (model loaded, index built), ``gc.freeze`` leaves later collections only
    the objects made since. Returns how many objects were frozen.
    """
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
