"""Benchmarks: ``python -m bench.<name> --out FILE.json``; results in docs/BENCHMARKS.md."""

from learn_core.runtime import keep_triton_out

keep_triton_out()  # no nanobind leak report at exit (see learn_core.runtime)
