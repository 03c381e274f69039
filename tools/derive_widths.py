"""Propose backbone widths proportional to each stage's measured ID, within a MACs/params budget.

The ``nasdet-derive-widths`` command (:mod:`nasdet.tools.derive_widths`), run from a checkout:
``python tools/derive_widths.py --help``.
"""

from __future__ import annotations

from nasdet.tools.derive_widths import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
