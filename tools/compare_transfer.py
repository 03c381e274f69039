"""Train one base detector under several transfer strategies and compare AP.

The ``nasdet-compare-transfer`` command (:mod:`nasdet.tools.compare_transfer`), run from a checkout:
``python tools/compare_transfer.py --help``.
"""

from __future__ import annotations

from nasdet.tools.compare_transfer import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
