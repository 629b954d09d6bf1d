"""Phantom cohort simulator: synthetic whole-body bone scans (ANT + POST) with known ages.

Public API: :func:`generate_cohort`, :func:`ensure_cohort`; ``python -m bone_age.phantom``.
"""

from .cohort import VERSION, ensure_cohort, generate_cohort

__all__ = ["VERSION", "ensure_cohort", "generate_cohort"]
