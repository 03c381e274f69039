"""Generate a synthetic dataset (cached: a second run with the same options is instant).

The ``nasdet-make-dataset`` command (:mod:`nasdet.tools.make_dataset`), run from a checkout:
``python tools/make_dataset.py --help``.
"""

from __future__ import annotations

from nasdet.tools.make_dataset import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
