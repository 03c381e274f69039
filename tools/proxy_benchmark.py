"""Build or extend a tabular detection-NAS benchmark of a search space, then report.

The ``nasdet-benchmark`` command (:mod:`nasdet.tools.proxy_benchmark`), run from a checkout:
``python tools/proxy_benchmark.py --help``.
"""

from __future__ import annotations

from nasdet.tools.proxy_benchmark import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
