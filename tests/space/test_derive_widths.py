"""Widths proportional to stage ID: budget met, rounding respected, clear errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nasdet.errors import NasdetError
from nasdet.space.derive_widths import (
    derive_config,
    propose_widths,
    read_stage_ids,
    widths_grid,
)
from tests.conftest import CONFIGS

TINY_WIDTHS = [32, 64, 128, 256]


def quadratic_cost(widths):
    # A conv stack's MACs: each stage costs ~ w_in * w_out (stem of 16 channels in front).
    chans = [16, *widths]
    return float(sum(a * b for a, b in zip(chans[:-1], chans[1:], strict=True)))


def brute_force(ids, cost, budget, grid):
    """Independent route: scan the scale finely and keep the widest rounded set that fits."""
    best = None
    for s in np.linspace(1e-3, 40.0, 200001):
        widths = tuple(min(grid, key=lambda g, v=s * v: (abs(g - v), -g)) for v in ids)
        if cost(widths) <= budget and (best is None or cost(widths) > cost(best)):
            best = widths
    return best


def test_widths_grid_is_multiples_of_the_divisor():
    assert widths_grid(8, 40) == [8, 16, 24, 32, 40]
    assert widths_grid(16, 64, min_width=20) == [32, 48, 64]
    with pytest.raises(NasdetError, match="max_width"):
        widths_grid(16, 8)


def test_proposal_matches_a_fine_scan_and_meets_the_budget():
    ids = [12.0, 30.0, 41.0, 25.0]
    grid = widths_grid(8, 512)
    budget = quadratic_cost(TINY_WIDTHS)
    widths, scale, cost, saturated, evaluations = propose_widths(ids, quadratic_cost, budget,
                                                                 [grid] * 4)
    assert cost == quadratic_cost(widths) <= budget
    assert all(w % 8 == 0 for w in widths)
    assert not saturated
    assert widths == brute_force(ids, quadratic_cost, budget, grid)
    # Each width is the grid point nearest to scale * ID.
    for w, v in zip(widths, ids, strict=True):
        assert abs(w - scale * v) <= 4
    assert evaluations < 40  # distinct width sets, each costed once


def test_widths_follow_the_id_order():
    widths, *_ = propose_widths([10.0, 40.0, 20.0], quadratic_cost, 1e5, [widths_grid(8, 1024)] * 3)
    assert widths[0] < widths[2] < widths[1]


def test_ties_round_up_and_budget_saturates_at_the_widest_width():
    grid = [8, 16]
    # 12 is halfway between 8 and 16: the larger one is taken.
    widths, scale, _, saturated, _ = propose_widths([12.0], lambda w: float(w[0]), 1e9, [grid])
    assert widths == (16,) and saturated and scale * 12 >= 16


def test_a_budget_no_widths_can_meet_is_a_clear_error():
    with pytest.raises(NasdetError, match="no width assignment meets the budget") as err:
        propose_widths([5.0, 5.0], quadratic_cost, 10.0, [widths_grid(8, 64)] * 2)
    assert err.value.key == "budget"


@pytest.mark.parametrize("ids", [[1.0, 0.0], [1.0, math.nan], [-2.0, 3.0]])
def test_bad_ids_are_refused(ids):
    with pytest.raises(NasdetError, match="positive finite"):
        propose_widths(ids, quadratic_cost, 1e9, [[8, 16]] * 2)


# ------------------------------------------------------------------------ reports
def _analysis(channels, ids, label="S (trained)"):
    return {"format": "nasdet.spectrum-analysis/1", "meta": {}, "checkpoints": [
        {"label": "init", "layers": {}},
        {"label": label, "layers": {
            f"backbone.layer{i + 1}": {"channels": c, "measures": {"id_dof": v}}
            for i, (c, v) in enumerate(zip(channels, ids, strict=True))} | {
            "neck.0": {"channels": 64, "measures": {"id_dof": 9.0}}}}]}


def test_read_stage_ids_from_each_report_format(tmp_path):
    analysis = _analysis(TINY_WIDTHS, [10.0, 20.0, 30.0, 40.0])
    names, ids, channels = read_stage_ids(analysis, label="S (trained)")
    assert names == [f"backbone.layer{i}" for i in range(1, 5)]
    assert ids == [10.0, 20.0, 30.0, 40.0] and channels == TINY_WIDTHS
    history = {"entries": [
        {"layers": {"backbone.layer1": {"id": 1.0, "channels": 32}}},
        {"layers": {"backbone.layer2": {"id": 7.0, "channels": 64},
                    "backbone.layer1": {"id": 3.0, "channels": 32}}}]}
    path = tmp_path / "history.json"
    path.write_text(json.dumps(history))
    assert read_stage_ids(path) == (["backbone.layer1", "backbone.layer2"], [3.0, 7.0], [32, 64])


def test_read_stage_ids_errors(tmp_path):
    with pytest.raises(NasdetError, match="no checkpoint labelled 'I'"):
        read_stage_ids(_analysis(TINY_WIDTHS, [1.0] * 4), label="I")
    with pytest.raises(NasdetError, match="backbone stage layers"):
        read_stage_ids({"layers": {"neck.0": {"channels": 4, "measures": {"id_dof": 1.0}}}})
    with pytest.raises(NasdetError, match="not found"):
        read_stage_ids(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(NasdetError, match="not a JSON spectrum report"):
        read_stage_ids(bad)


# ------------------------------------------------------------------------ configs
@pytest.fixture(scope="module")
def tiny_cfg():
    from nasdet.train import load_config

    return load_config(CONFIGS / "tiny_faster_rcnn_synth.py")


@pytest.mark.parametrize("metric,budget", [("macs", 1.0), ("params", 0.7)])
def test_derive_config_meets_the_budget_on_the_tiny_detector(tiny_cfg, metric, budget):
    from nasdet.models.utils.macs import config_complexity

    report = _analysis(TINY_WIDTHS, [18.0, 30.0, 44.0, 36.0])
    derived, p = derive_config(tiny_cfg, report, metric=metric, budget=budget,
                               input_size=(128, 128))
    bb = derived.model.backbone
    assert bb.type == "FlexResNet" and list(bb.widths) == list(p.widths)
    assert all(w % 8 == 0 for w in p.widths)
    assert list(derived.model.neck.in_channels) == list(p.widths)
    before = config_complexity(tiny_cfg, (128, 128))
    after = config_complexity(derived, (128, 128))  # counted again, independently
    assert after[metric] == p.cost <= budget * before[metric]
    assert p.original_cost == before[metric]
    assert tiny_cfg.model.backbone.widths == TINY_WIDTHS  # the input config is untouched


def test_report_of_another_architecture_is_refused(tiny_cfg):
    report = _analysis([32, 64, 96, 256], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(NasdetError, match="another architecture") as err:
        derive_config(tiny_cfg, report)
    assert err.value.key == "model.backbone.widths"
    three = {"layers": {f"backbone.layer{i}": {"channels": c, "measures": {"id_dof": 1.0}}
                        for i, c in enumerate(TINY_WIDTHS[:3], start=1)}}
    with pytest.raises(NasdetError, match="another architecture"):
        derive_config(tiny_cfg, three)


def test_unreachable_budget_and_bad_options(tiny_cfg):
    report = _analysis(TINY_WIDTHS, [18.0, 30.0, 44.0, 36.0])
    with pytest.raises(NasdetError, match="no width assignment meets the budget"):
        derive_config(tiny_cfg, report, budget=0.05)
    with pytest.raises(NasdetError, match="must be one of") as err:
        derive_config(tiny_cfg, report, metric="flops")
    assert err.value.key == "--metric"
    with pytest.raises(NasdetError) as err:
        derive_config(tiny_cfg, report, budget=-1)
    assert err.value.key == "--budget"
