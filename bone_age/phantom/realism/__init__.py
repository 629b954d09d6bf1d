"""Realism report: label-free measures of phantom scans against a real whole-body scan.

Public API: :func:`measure`, :func:`decide_view`, :func:`write_report`;
``python -m bone_age.phantom.realism REF.dcm --out DIR``.
"""

from bone_age.data.anatomy import decide_view

from .measures import measure
from .one_scan import compare, write_report

__all__ = ["compare", "decide_view", "measure", "write_report"]
