"""What every ``tools/*.py`` shares: user errors as one line, MMDetection's options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from nasdet.errors import NasdetError

_BRACKETS = {"(": ")", "[": "]"}


def _bracket_problem(value: str) -> str | None:
    """Why ``value``'s brackets do not nest (``None`` when they do)."""
    opened: list[str] = []
    for ch in value:
        if ch in _BRACKETS:
            opened.append(ch)
        elif ch in _BRACKETS.values():
            if not opened or _BRACKETS[opened.pop()] != ch:
                return f"unexpected '{ch}'"
    return f"'{opened[-1]}' is not closed" if opened else None


class ConfigOptionsAction(argparse.Action):
    """``--cfg-options k=v ...`` in mmengine's ``DictAction`` syntax, refusing bad items.

    Valid items are parsed by mmengine's ``DictAction`` itself (``a.b=1``,
    ``k=[1,2]``, ``k=(a,b)``, ``k=None``, ``k=true``); an item without ``=``, with an
    empty key, or whose list/tuple brackets do not nest raises a
    :class:`~nasdet.errors.NasdetError` naming ``--cfg-options`` and the item.

    Used as ``parser.add_argument('--cfg-options', nargs='+', action=ConfigOptionsAction)``.
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from mmengine.config import DictAction

        items = [values] if isinstance(values, str) else list(values or [])
        option = option_string or "--cfg-options"
        for item in items:
            key, sep, value = item.partition("=")
            if not sep:
                raise NasdetError(f"{item!r} has no '=': write KEY=VALUE, e.g. "
                                  "train_cfg.max_epochs=2", key=option)
            if not key.strip() or any(not part for part in key.split(".")):
                raise NasdetError(f"{item!r}: empty key (or an empty part in the dotted "
                                  "key): write KEY=VALUE, e.g. train_cfg.max_epochs=2",
                                  key=option)
            problem = _bracket_problem(value)
            # mmengine reads a value as a list/tuple when it is bracketed or has a comma.
            if problem and (value.lstrip("'\"")[:1] in ("[", "(") or "," in value):
                raise NasdetError(f"{item!r}: brackets do not balance ({problem}); a value "
                                  "with spaces must be quoted whole, e.g. 'k=[1, 2]'", key=option)
        delegate = DictAction(self.option_strings, self.dest, nargs=self.nargs)
        for item in items:  # one at a time, so an error names its item
            try:
                delegate(parser, namespace, [item], option_string)
            except (AssertionError, ValueError, IndexError, RecursionError) as exc:
                raise NasdetError(f"{item!r}: cannot parse the value ({exc})",
                                  key=option) from None
        if not items:
            delegate(parser, namespace, items, option_string)


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--work-dir`` and ``--cfg-options k=v`` exactly as MMDetection's tools take them."""
    parser.add_argument("--work-dir", help="directory for logs, checkpoints and results")
    parser.add_argument(
        "--cfg-options", nargs="+", action=ConfigOptionsAction, default=None,
        metavar="KEY=VALUE",
        help="override config keys, e.g. train_cfg.max_epochs=2 model.backbone.depth=34")




def _launcher(value: str) -> str:
    from nasdet.train.launch import LAUNCHERS

    if value not in LAUNCHERS:
        raise NasdetError(f"unknown launcher {value!r}; choose one of {', '.join(LAUNCHERS)}",
                          key="--launcher")
    return value


def add_launcher_options(parser: argparse.ArgumentParser) -> None:
    """``--launcher`` and ``--local_rank`` as MMDetection's tools take them.

    ``torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch`` trains with
    DDP (MMDetection's ``tools/dist_train.sh``); a bad value is one error line.
    """
    from nasdet.train.launch import LAUNCHERS

    parser.add_argument("--launcher", type=_launcher, default="none",
                        metavar="{" + ",".join(LAUNCHERS) + "}",
                        help="job launcher: none (one process) or the launcher that "
                        "started the processes (pytorch: torchrun)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0,
                        help=argparse.SUPPRESS)  # torch.distributed.launch passes it


def apply_local_rank(args: argparse.Namespace) -> None:
    """Export ``--local_rank`` as ``LOCAL_RANK`` where the launcher did not (as mmdet does,
    for ``torch.distributed.launch``); a one-process run (``--launcher none``) is left alone."""
    import os

    if args.launcher != "none":
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))


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


def print_metrics(title: str, metrics: dict) -> None:
    """A tool's closing metrics table: ``title`` and one ``key value`` line each."""
    print(f"{title} (COCO AP as fractions, pycocotools):")
    for key, value in metrics.items():
        print(f"  {key:28s} {value:.4f}")
