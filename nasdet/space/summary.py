"""Tables of sampled candidates: size, cost, budget, parameters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nasdet.models.utils.macs import MACS_UNIT, PARAMS_UNIT
from nasdet.space.complexity import base_complexity, candidate_complexity, check_constraints
from nasdet.space.space import Candidate, SearchSpace
from nasdet.utils.io import atomic_write_json

__all__ = ["dump_candidates", "format_table", "summarize"]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return "null" if value is None else str(value)


def summarize(candidates: Iterable[Candidate], *, complexity: bool = True) -> list[dict[str, Any]]:
    """One row per candidate: key, values, and (optionally) params, MACs, budget check.

    Args:
        candidates: Candidates of one space.
        complexity: Build each model and count it (see :mod:`nasdet.space.complexity`).

    Returns:
        Dicts with ``key``, ``params`` (the candidate's parameters), ``values``
        (per-stage lists), and with ``complexity``: ``num_params``, ``macs``,
        ``within_budget``, ``reason``.
    """
    rows = []
    for cand in candidates:
        row: dict[str, Any] = {"key": cand.key, "params": dict(cand.params), "values": cand.values}
        if complexity:
            c = candidate_complexity(cand)
            ok, reason = check_constraints(cand)
            row.update(num_params=c.params, macs=c.macs, within_budget=ok, reason=reason)
        rows.append(row)
    return rows


def format_table(space: SearchSpace, rows: Sequence[dict[str, Any]], *, base: bool = True) -> str:
    """A plain-text table of :func:`summarize` rows (units in the header).

    Args:
        space: The space the rows come from.
        rows: Rows from :func:`summarize`.
        base: Add a first row for the base config (when rows carry complexity).
    """
    with_cost = bool(rows) and "macs" in rows[0]
    h, w = space.input_size
    lines = [f"space {space.name}: {len(rows)} candidates"]
    if with_cost:
        lines.append(f"params: millions of {PARAMS_UNIT}")
        lines.append(f"MACs: billions of {MACS_UNIT}, input {h}x{w}")
        lines.append(f"{'key':12s}  {'budget':6s}  {'params[M]':>9s}  {'MACs[G]':>8s}  values")
        if base:
            b = base_complexity(space)
            lines.append(
                f"{'base':12s}  {'':6s}  {b.params / 1e6:9.3f}  {b.macs / 1e9:8.3f}  "
                f"{space.base_path}"
            )
    else:
        lines.append(f"{'key':12s}  values")
    for row in rows:
        values = " ".join(f"{k}={_short(v)}" for k, v in row["values"].items())
        if with_cost:
            budget = "ok" if row["within_budget"] else "over"
            lines.append(
                f"{row['key']:12s}  {budget:6s}  {row['num_params'] / 1e6:9.3f}  "
                f"{row['macs'] / 1e9:8.3f}  {values}"
            )
        else:
            lines.append(f"{row['key']:12s}  {values}")
    if with_cost:
        over = [r for r in rows if not r["within_budget"]]
        for row in over:
            lines.append(f"over budget {row['key']}: {row['reason']}")
    return "\n".join(lines)


def dump_candidates(
    candidates: Sequence[Candidate],
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    transfer: bool = True,
    checkpoint: str | None = None,
) -> list[Path]:
    """Write ``<key>.py`` standalone configs and ``candidates.json`` into ``out_dir``.

    Args:
        candidates: The candidates.
        rows: Their :func:`summarize` rows (same order).
        out_dir: Destination directory (created).
        transfer: Apply the transfer dimension (see :meth:`Candidate.apply`).
        checkpoint: Overrides the transfer dimension's checkpoint.

    Returns:
        The config paths written.
    """
    out = Path(out_dir)
    paths = [
        cand.dump(out / f"{cand.key}.py", transfer=transfer, checkpoint=checkpoint)
        for cand in candidates
    ]
    space = candidates[0].space if candidates else None
    atomic_write_json(
        out / "candidates.json",
        {
            "space": space.name if space else None,
            "space_file": str(space.file) if space else None,
            "input_size": list(space.input_size) if space else None,
            "num_params_unit": PARAMS_UNIT,
            "macs_unit": MACS_UNIT,
            "candidates": [{**row, "config": str(p)} for row, p in zip(rows, paths, strict=True)],
        },
    )
    return paths
