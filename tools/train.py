"""Train a detector from an MMDetection-style config.

The ``nasdet-train`` command (:mod:`nasdet.tools.train`), run from a checkout:
``python tools/train.py --help``.
"""

from __future__ import annotations

from nasdet.tools.train import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
