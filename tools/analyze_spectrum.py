"""Eigenspectra and intrinsic dimensionality of a detector's layers, checkpoints side by side.

The ``nasdet-analyze`` command (:mod:`nasdet.tools.analyze_spectrum`), run from a checkout:
``python tools/analyze_spectrum.py --help``.
"""

from __future__ import annotations

from nasdet.tools.analyze_spectrum import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
