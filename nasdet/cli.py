"""What every ``tools/*.py`` shares: user errors as one line, MMDetection's options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from nasdet.errors import NasdetError


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--work-dir`` and ``--cfg-options k=v`` exactly as MMDetection's tools take them."""
    from mmengine.config import DictAction

    parser.add_argument("--work-dir", help="directory for logs, checkpoints and results")
    parser.add_argument(
        "--cfg-options", nargs="+", action=DictAction, default=None,
        help="override config keys, e.g. train_cfg.max_epochs=2 model.backbone.depth=34")


def run_tool(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a tool's ``main``; a :class:`NasdetError` becomes ``error: ...`` and exit 2.

    Args:
        main: The tool's entry point.
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    try:
        return int(main(argv) or 0)
    except NasdetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
