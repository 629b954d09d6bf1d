"""Realism report: label-free measures of phantom scans against real whole-body scans.

Public API: :func:`measure`, :func:`decide_view`, :func:`compare` and :func:`write_report` (one
real scan, ``one_scan``), :func:`read_folder` and :func:`compare_folder` (a folder of real
views, ``population``); ``python -m bone_age.phantom.realism REF.dcm|FOLDER --out DIR``.
"""

from bone_age.data.anatomy import decide_view

from .measures import measure
from .one_scan import compare, write_report
from .population import compare_folder, read_folder

__all__ = ["compare", "compare_folder", "decide_view", "measure", "read_folder", "write_report"]
