"""Evaluate a trained checkpoint on the config's test split (COCO metrics).

The ``nasdet-test`` command (:mod:`nasdet.tools.test`), run from a checkout:
``python tools/test.py --help``.
"""

from __future__ import annotations

from nasdet.tools.test import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
