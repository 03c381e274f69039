"""The pre-training study: I vs S with eigenspectra and ID dynamics, then widths derived from ID.

The ``nasdet-study-pretraining`` command (:mod:`nasdet.tools.study_pretraining`), run from a checkout:
``python tools/study_pretraining.py --help``.
"""

from __future__ import annotations

from nasdet.tools.study_pretraining import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
