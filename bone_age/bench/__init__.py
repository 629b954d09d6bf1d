"""Benchmarks: where the time (and memory) goes. ``python -m bone_age.bench`` runs the suite.

One module per benchmark item; each exposes ``run(ctx) -> list[dict]`` returning result entries
(see :func:`bone_age.bench.common.entry`). Comparisons are interleaved (A, B, A, B, ...) in the
same process and reported as the median of the paired ratios with their spread.
"""
