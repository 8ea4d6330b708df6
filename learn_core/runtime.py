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
