"""The build step of nasdet's wheel: configs, search spaces and checkpoints as package data.

Everything else is declared in pyproject.toml. ``configs/``, ``search_spaces/`` and
``checkpoints/`` stay where they are in the repository (the one source) and are copied
into the built package as ``nasdet/.mim/<dir>``, MMDetection's layout for
``mmdet/.mim/configs``; :mod:`nasdet.utils.resources` finds them there. An editable
install reads the checkout's own directories, so nothing is copied for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = ("configs", "search_spaces", "checkpoints")
IGNORED = shutil.ignore_patterns("__pycache__", "*.py[cod]", ".*")


class BuildPyWithData(build_py):
    """``build_py`` that also copies :data:`SHIPPED` into ``<build_lib>/nasdet/.mim``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        mim = Path(self.build_lib) / "nasdet" / ".mim"
        for name in SHIPPED:
            src, dst = HERE / name, mim / name
            if dst.exists():
                shutil.rmtree(dst)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=IGNORED)


setup(cmdclass={"build_py": BuildPyWithData})
