"""Search architectures and transfer strategies: the main job.

The ``nasdet-search`` command (:mod:`nasdet.tools.search`), run from a checkout:
``python tools/search.py --help``.
"""

from __future__ import annotations

from nasdet.tools.search import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
