"""Backbone widths proportional to measured intrinsic dimensionality, within a budget.

The seed paper's width rule: a stage whose features occupy few dimensions (low ID
relative to its channels) is given fewer channels, one whose features fill its width
more. Given the ID of each backbone stage's output (Suzuki's ``N(lambda)``, measured on
a trained model by :func:`nasdet.spectrum.analysis.analyze_checkpoints` or the
:class:`~nasdet.hooks.EigenspectrumHook`), the proposed widths are

    ``w_i = round_i(s * ID_i)``

where ``round_i`` takes the nearest allowed width of stage ``i`` (multiples of a
divisor, or the values of a search-space dimension; ties go up) and ``s`` is the
largest scale whose rounded widths keep the chosen cost (MACs or parameters of the
whole detector) within ``budget`` (a fraction of the original's cost). The cost is a
non-decreasing step function of ``s``, so ``s`` is found by bisection; every distinct
width tuple is costed once.

Errors (:class:`~nasdet.errors.NasdetError`): a spectrum report of another
architecture (stage count or channels differ from the config's backbone), a budget
that even the narrowest allowed widths exceed, non-finite or non-positive IDs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nasdet.errors import NasdetError

__all__ = [
    "METRICS",
    "WidthProposal",
    "config_input_size",
    "derive_config",
    "propose_widths",
    "read_stage_ids",
    "widths_grid",
]

METRICS = ("macs", "params")

#: Stage output layers of ResNet-style backbones, as the probes name them.
_STAGE = re.compile(r"backbone\.layer(\d+)")

#: Bisection steps on the scale (each halves the interval; 60 reach float precision).
_BISECTION_STEPS = 60


@dataclass(frozen=True)
class WidthProposal:
    """Widths proposed from per-stage ID.

    Args:
        layers: The stage layers, in order (``backbone.layer1`` ...).
        ids: Their ID (dimensions).
        original: The original widths.
        widths: The proposed widths.
        scale: ``s`` of ``w_i ~ s * ID_i`` (channels per ID dimension).
        metric: ``macs`` or ``params``.
        budget: The allowed cost as a fraction of the original's.
        original_cost: The original's cost (``metric`` units: MACs or parameters).
        cost: The proposal's cost.
        saturated: True when every stage is at its widest allowed width and the budget
            would allow more.
        evaluations: Distinct width tuples costed.
    """

    layers: tuple[str, ...]
    ids: tuple[float, ...]
    original: tuple[int, ...]
    widths: tuple[int, ...]
    scale: float
    metric: str
    budget: float
    original_cost: float
    cost: float
    saturated: bool
    evaluations: int

    @property
    def ratio(self) -> float:
        """The proposal's cost over the original's."""
        return self.cost / self.original_cost

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self) | {"ratio": self.ratio}


def widths_grid(divisor: int, max_width: int, min_width: int | None = None) -> list[int]:
    """Allowed widths of a stage: multiples of ``divisor`` from ``min_width`` to ``max_width``."""
    if divisor < 1:
        raise NasdetError(f"must be >= 1, got {divisor}", key="divisor")
    low = divisor if min_width is None else max(divisor, math.ceil(min_width / divisor) * divisor)
    if max_width < low:
        raise NasdetError(f"max width {max_width} is below the narrowest allowed width {low}",
                          key="max_width")
    return list(range(low, max_width + 1, divisor))


def _nearest(grid: Sequence[int], value: float) -> int:
    """The grid value nearest to ``value`` (ties: the larger)."""
    best = grid[0]
    for g in grid:
        if abs(g - value) <= abs(best - value):
            best = g
    return best


def propose_widths(
    ids: Sequence[float],
    cost: Callable[[tuple[int, ...]], float],
    budget_cost: float,
    grids: Sequence[Sequence[int]],
) -> tuple[tuple[int, ...], float, float, bool, int]:
    """The widest ``round(s * ids)`` whose ``cost`` stays within ``budget_cost``.

    Args:
        ids: Positive ID per stage.
        cost: Cost of a width tuple (non-decreasing in every width).
        budget_cost: The largest allowed cost (same units as ``cost``).
        grids: Allowed widths per stage (any order; duplicates ignored).

    Returns:
        ``(widths, scale, cost, saturated, evaluations)``.

    Raises:
        NasdetError: Bad IDs, empty grids, or a budget the narrowest widths exceed.
    """
    ids = [float(v) for v in ids]
    if len(grids) != len(ids):
        raise NasdetError(f"{len(grids)} width grids for {len(ids)} stages", key="grids")
    if not ids or any(not math.isfinite(v) or v <= 0 for v in ids):
        raise NasdetError(f"every stage ID must be a positive finite number, got {ids}",
                          key="ids")
    grids = [sorted({int(g) for g in grid}) for grid in grids]
    if any(not grid or grid[0] < 1 for grid in grids):
        raise NasdetError("every stage needs at least one positive allowed width", key="grids")
    costs: dict[tuple[int, ...], float] = {}

    def widths_at(s: float) -> tuple[int, ...]:
        return tuple(_nearest(grid, s * v) for grid, v in zip(grids, ids, strict=True))

    def cost_of(widths: tuple[int, ...]) -> float:
        if widths not in costs:
            costs[widths] = float(cost(widths))
        return costs[widths]

    narrowest = tuple(grid[0] for grid in grids)
    if cost_of(narrowest) > budget_cost:
        raise NasdetError(
            f"no width assignment meets the budget: even the narrowest allowed widths "
            f"{list(narrowest)} cost {cost_of(narrowest):,.0f} > {budget_cost:,.0f}",
            key="budget")
    # Scales at which every stage sits at its narrowest / widest allowed width.
    lo = min(grid[0] / v for grid, v in zip(grids, ids, strict=True)) * 0.5
    hi = max(grid[-1] / v for grid, v in zip(grids, ids, strict=True)) * 2.0
    if cost_of(widths_at(hi)) <= budget_cost:
        widths = widths_at(hi)
        return widths, hi, cost_of(widths), True, len(costs)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if cost_of(widths_at(mid)) <= budget_cost:
            lo = mid
        else:
            hi = mid
    widths = widths_at(lo)
    if cost_of(widths) > budget_cost:  # lo's start (all narrowest) always fits
        widths = narrowest
    return widths, lo, cost_of(widths), False, len(costs)


# ---------------------------------------------------------------------------- reports
def read_stage_ids(
    report: str | Path | Mapping[str, Any], *, label: str | None = None, key: str = "id_dof"
) -> tuple[list[str], list[float], list[int]]:
    """Per-stage ID and channels from a spectrum report.

    Args:
        report: A ``spectrum.json`` of ``tools/analyze_spectrum.py`` (format
            ``nasdet.spectrum-analysis/1``; the checkpoint ``label``, default the last), an
            :class:`~nasdet.hooks.EigenspectrumHook` history (its last entry), or a
            trial's ``spectrum.json`` (``{"layers": ...}``); a path or the loaded mapping.
        label: Which checkpoint of an analysis report.
        key: The measure (analysis reports: ``measures[key]``; histories: ``id``).

    Returns:
        ``(layers, ids, channels)`` of the ``backbone.layerK`` entries, in stage order.

    Raises:
        NasdetError: Unreadable file, unknown label, no backbone stages in the report.
    """
    file = str(report) if isinstance(report, (str, Path)) else "<spectrum report>"
    if isinstance(report, (str, Path)):
        try:
            data = json.loads(Path(report).read_text())
        except FileNotFoundError:
            raise NasdetError("spectrum report not found", file=file) from None
        except (OSError, ValueError) as exc:
            raise NasdetError(f"not a JSON spectrum report ({exc})", file=file) from None
    else:
        data = report
    if not isinstance(data, Mapping):
        raise NasdetError("not a spectrum report (expected a JSON object)", file=file)
    layers: Mapping[str, Any]
    if "checkpoints" in data:
        runs = data["checkpoints"]
        if not runs:
            raise NasdetError("the report has no checkpoints", file=file, key="checkpoints")
        if label is None:
            run = runs[-1]
        else:
            found = [r for r in runs if r.get("label") == label]
            if not found:
                raise NasdetError(
                    f"no checkpoint labelled {label!r}; the report has "
                    f"{[r.get('label') for r in runs]}", file=file, key="--label")
            run = found[0]
        layers = {n: {"id": v["measures"][key], "channels": v["channels"]}
                  for n, v in run["layers"].items()}
    elif "entries" in data:
        if not data["entries"]:
            raise NasdetError("the history has no measurements", file=file, key="entries")
        layers = data["entries"][-1]["layers"]
    elif "layers" in data:
        layers = {n: {"id": v["measures"][key], "channels": v["channels"]}
                  for n, v in data["layers"].items()}
    else:
        raise NasdetError("not a spectrum report (no checkpoints, entries or layers)", file=file)
    stages = sorted((int(m.group(1)), name) for name in layers
                    if (m := _STAGE.fullmatch(name)))
    if not stages:
        raise NasdetError(
            "the report has no backbone stage layers (backbone.layerK); analyse with "
            "--layers backbone_stages", file=file, key="layers")
    names = [name for _, name in stages]
    return (names, [float(layers[n]["id"]) for n in names],
            [int(layers[n]["channels"]) for n in names])


# ---------------------------------------------------------------------------- configs
def config_input_size(cfg: Any) -> tuple[int, int]:
    """``(H, W)`` of the test pipeline's first ``Resize`` scale (mmdet writes ``(W, H)``).

    Falls back to mmdet's COCO test scale, 800 x 1333.
    """
    loader = cfg.get("test_dataloader") or cfg.get("val_dataloader") or {}
    pipeline = (loader.get("dataset") or {}).get("pipeline") or []
    for step in pipeline:
        if step.get("type") == "Resize" and step.get("scale"):
            w, h = step["scale"]
            return int(h), int(w)
    return 800, 1333


def _with_widths(cfg: Any, layout: Any, widths: Sequence[int]) -> Any:
    """A copy of ``cfg`` whose backbone (as FlexResNet) has ``widths``; the neck follows."""
    import copy

    from nasdet.models import FlexResNet
    from nasdet.space.targets import _ensure_custom_imports
    from nasdet.utils.config import detector_cfg

    out = copy.deepcopy(cfg)
    det = detector_cfg(out.model)
    bb = copy.deepcopy(dict(layout.flex))
    bb.pop("width_multipliers", None)
    bb["widths"] = [int(w) for w in widths]
    bb["stem_channels"] = layout.stem
    det["backbone"] = bb
    neck = det.get("neck")
    if isinstance(neck, Mapping) and "in_channels" in neck:
        neck["in_channels"] = list(FlexResNet.stage_channels_for(**bb))
    _ensure_custom_imports(out)
    return out


def derive_config(
    cfg: Any,
    report: str | Path | Mapping[str, Any],
    *,
    metric: str = "macs",
    budget: float = 1.0,
    input_size: tuple[int, int] = (128, 128),
    label: str | None = None,
    divisor: int | None = None,
    max_width: int | None = None,
    grids: Sequence[Sequence[int]] | None = None,
) -> tuple[Any, WidthProposal]:
    """A copy of ``cfg`` with backbone widths proportional to the report's stage ID.

    Args:
        cfg: The config of the analysed model (mmengine ``Config``).
        report: Its spectrum report (see :func:`read_stage_ids`).
        metric: ``macs`` or ``params``: the cost kept within ``budget``.
        budget: Allowed cost as a fraction of the original's (1.0: no more than it).
        input_size: ``(H, W)`` at which MACs are counted.
        label: Checkpoint label in an analysis report (default: its last).
        divisor: Widths are multiples of it (default: the backbone's ``divisor``).
        max_width: Widest allowed stage (default: 4x the original's widest stage).
        grids: Allowed widths per stage (overrides ``divisor``/``max_width``).

    Returns:
        ``(derived config, proposal)``.

    Raises:
        NasdetError: Another architecture's report, a budget no widths can meet, a
            bad option.
    """
    from nasdet.models.utils.macs import config_complexity
    from nasdet.space.targets import backbone_layout
    from nasdet.utils.config import detector_cfg

    file = str(cfg.filename or "<config>")
    if metric not in METRICS:
        raise NasdetError(f"must be one of {METRICS}, got {metric!r}", key="--metric")
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise NasdetError(f"must be a positive fraction of the original, got {budget!r}",
                          key="--budget")
    layout = backbone_layout(detector_cfg(cfg.model)["backbone"], file=file)
    names, ids, channels = read_stage_ids(report, label=label)
    source = str(report) if isinstance(report, (str, Path)) else "the spectrum report"
    if len(names) != layout.num_stages or tuple(channels) != tuple(layout.widths):
        raise NasdetError(
            f"{source} is of another architecture: its stages {names} have "
            f"{channels} channels, {file}'s backbone has {list(layout.widths)}",
            file=file, key="model.backbone.widths")
    if grids is None:
        divisor = int(divisor or layout.divisor)
        top = int(max_width or 4 * max(layout.widths))
        grids = [widths_grid(divisor, top)] * len(ids)
    elif len(grids) != len(ids):
        raise NasdetError(f"{len(grids)} width grids for {len(ids)} stages", key="grids")

    def cost(widths: tuple[int, ...]) -> float:
        c = config_complexity(_with_widths(cfg, layout, widths), tuple(input_size))
        return float(c[metric])

    original_cost = cost(tuple(layout.widths))
    widths, scale, new_cost, saturated, evaluations = propose_widths(
        ids, cost, budget * original_cost, grids)
    proposal = WidthProposal(
        layers=tuple(names), ids=tuple(ids), original=tuple(layout.widths), widths=widths,
        scale=scale, metric=metric, budget=float(budget), original_cost=original_cost,
        cost=new_cost, saturated=saturated, evaluations=evaluations)
    return _with_widths(cfg, layout, widths), proposal


def propose_candidate(space: Any, candidate: Any, dimension: str, ids: Sequence[float], *,
                      metric: str = "macs", budget: float = 1.0) -> dict[str, Any]:
    """A space candidate with the ``dimension`` widths proportional to its stages' ``ids``.

    The rule of :func:`propose_widths` on the dimension's per-stage values; the cost of a
    width tuple is the space's complexity (``metric``) of the candidate with those widths,
    infinite where the space's constraints reject it; the budget is ``budget`` x the
    candidate's own cost. The ID-guided search step and the benchmark's replay of it use
    this one function.

    Args:
        space: The :class:`~nasdet.space.SearchSpace`.
        candidate: The measured candidate.
        dimension: The space's width dimension (one value per backbone stage).
        ids: Stage IDs of the trained candidate, in stage order.
        metric: ``macs`` or ``params``.
        budget: Fraction of the candidate's cost the proposal may use.

    Returns:
        ``params`` (the proposed candidate's), ``key``, ``old_widths``, ``widths``,
        ``source_cost``, ``budget_cost``, ``cost``, ``cost_ratio``, ``scale``,
        ``saturated``, ``evaluations``; ``widths == old_widths`` when the rule keeps them.

    Raises:
        NasdetError: the dimension is inactive for the candidate, the IDs do not match
            its stages, or even the narrowest widths break the space's constraints.
    """
    dim = next((d for d in space.dimensions if d.name == dimension), None)
    if dim is None:
        raise NasdetError(f"the space has no dimension {dimension!r}", key="dimension")
    if not all(p in candidate.params for p in dim.params):
        raise NasdetError(f"the dimension {dim.name!r} is inactive for this candidate")
    old = [int(candidate.params[p]) for p in dim.params]
    if len(ids) != len(old):
        raise NasdetError(f"{len(ids)} stage IDs for the {len(old)} stages of {dim.name!r}")

    def cost_of(widths: Any) -> float:
        other = space.candidate({**candidate.params, **dim.params_of([int(w) for w in widths])})
        ok, _ = space.check_constraints(other)
        return float(space.complexity(other)[metric]) if ok else math.inf

    source_cost = float(space.complexity(candidate)[metric])
    budget_cost = budget * source_cost
    grids = [dim.stage_values_set(i) for i in range(len(old))]
    narrowest = [min(g) for g in grids]
    if math.isinf(cost_of(narrowest)):
        _, why = space.check_constraints(space.candidate(
            {**candidate.params, **dim.params_of(narrowest)}))
        raise NasdetError(f"even the narrowest widths {narrowest} break the space's "
                          f"constraints: {why}")
    widths, scale, cost, saturated, evaluations = propose_widths(ids, cost_of, budget_cost,
                                                                 grids)
    params = {**candidate.params, **dim.params_of(list(widths))}
    return {"params": params, "key": space.candidate(params).key, "old_widths": old,
            "widths": list(widths), "source_cost": source_cost, "budget_cost": budget_cost,
            "cost": cost, "cost_ratio": cost / source_cost, "scale": scale,
            "saturated": saturated, "evaluations": evaluations}
