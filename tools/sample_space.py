"""Check a search space, sample candidates at random, show their cost, dump their configs.

The ``nasdet-sample-space`` command (:mod:`nasdet.tools.sample_space`), run from a checkout:
``python tools/sample_space.py --help``.
"""

from __future__ import annotations

from nasdet.tools.sample_space import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
