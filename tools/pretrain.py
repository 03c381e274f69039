"""Pre-train a detector's backbone on a classification source task.

The ``nasdet-pretrain`` command (:mod:`nasdet.tools.pretrain`), run from a checkout:
``python tools/pretrain.py --help``.
"""

from __future__ import annotations

from nasdet.tools.pretrain import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
