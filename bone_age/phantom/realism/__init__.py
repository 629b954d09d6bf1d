"""Realism report: label-free measures of phantom scans against a real whole-body scan.

Public API: :func:`measure`, :func:`decide_view`, :func:`write_report`;
``python -m bone_age.phantom.realism REF.dcm --out DIR``.
"""

from .measures import measure
from .report import compare, write_report
from .view import decide_view

__all__ = ["compare", "decide_view", "measure", "write_report"]
