"""The search report's headline, the demo's enqueued base, and the shipped source backbone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from nasdet.errors import NasdetError
from nasdet.report.search_report import (
    compare_base,
    compare_transfer,
    read_layer_ids,
    write_search_report,
)
from tests.conftest import CONFIGS, REPO

DEMO = REPO / "configs/search/tiny_synth.yaml"
SHIPPED = REPO / "checkpoints/tiny_backbone_synth_cls_24e.pth"


def _row(trial, ap50, macs, transfer="scratch", state="COMPLETE", name=None, **extra):
    row = {"trial": trial, "state": state, "ap50": ap50, "ap": None if ap50 is None else ap50 / 2, "macs": macs,
           "params": macs / 100, "param/transfer": transfer, **extra}
    if name:
        row["enqueued_as"] = name
    return row


def _rows():
    """Trial 0 is the base (MACs 100); by hand, trial 3 is the best searched at <= 100."""
    return [
        _row(0, 0.50, 100.0, name="base"),
        _row(1, 0.70, 100.0, "finetune", name="base_finetune"),  # enqueued: not searched
        _row(2, 0.90, 120.0, "finetune"),                       # better, but more MACs
        _row(3, 0.60, 90.0, "freeze"),
        _row(4, 0.55, 100.0, "scratch"),                        # MACs equal: eligible
        _row(5, 0.99, 50.0, "finetune", state="PRUNED"),        # not fully trained
        _row(6, None, 10.0, state="FAIL"),
    ]


def test_best_searched_at_no_more_macs_against_the_base():
    rows = _rows()
    res = compare_base(rows, "ap50", "maximize")
    # Independent reference: filter and max by hand.
    searched = [r for r in rows if r["state"] == "COMPLETE" and "enqueued_as" not in r]
    eligible = [r for r in searched if r["macs"] <= 100.0]
    assert res["base"]["trial"] == 0
    assert res["best"]["trial"] == max(eligible, key=lambda r: r["ap50"])["trial"] == 3
    assert res["best_any"]["trial"] == 2
    assert res["better"] is True
    assert "trial 3, beats the base (trial 0): ap50 0.6 vs 0.5" in res["note"]
    assert "0.90x the base's MACs" in res["note"]
    # Minimising: the lowest value wins, among the same eligible trials.
    assert compare_base(rows, "ap50", "minimize")["best"]["trial"] == 4


def test_a_candidate_is_held_against_the_base_trained_the_same_way():
    rows = _rows()
    ft = [r for r in rows if r["trial"] not in (3, 4)] + [_row(7, 0.65, 95.0, "finetune")]
    res = compare_base(ft, "ap50", "maximize")
    # trial 7 (finetune, 0.65) beats the scratch base (0.50) but not the fine-tuned one (0.70)
    assert res["best"]["trial"] == 7 and res["base"]["trial"] == 1
    assert res["better"] is False
    assert "does not beat the base trained the same way (finetune) (trial 1)" in res["note"]
    assert "0.95x the base's MACs" in res["note"]


def test_base_comparison_states_what_is_missing():
    rows = _rows()
    worse = [r for r in rows if r["trial"] != 3]  # best eligible is now trial 4, 0.55 > 0.50
    assert compare_base(worse, "ap50", "maximize")["better"] is True
    not_better = [_row(0, 0.8, 100.0, name="base"), _row(1, 0.6, 80.0)]
    res = compare_base(not_better, "ap50", "maximize")
    assert res["better"] is False and "does not beat" in res["note"]
    no_base = [r for r in rows if r["trial"] != 0]
    res = compare_base(no_base, "ap50", "maximize")
    assert res["base"] is None and res["better"] is None
    assert "no trial is named 'base'" in res["note"] and res["best"]["trial"] == 2
    pruned = [_row(0, 0.5, 100.0, state="PRUNED", name="base"), _row(1, 0.6, 80.0)]
    assert "did not finish (PRUNED)" in compare_base(pruned, "ap50", "maximize")["note"]
    too_big = [_row(0, 0.5, 100.0, name="base"), _row(1, 0.6, 101.0)]
    res = compare_base(too_big, "ap50", "maximize")
    assert res["best"] is None and "No fully trained searched candidate" in res["note"]


def test_finetune_vs_scratch_from_searched_trials_or_the_base_both_ways():
    rows = _rows() + [_row(7, 0.65, 95.0, "scratch")]
    res = compare_transfer(rows, "ap50", "maximize")
    assert res["source"] == "searched trials"
    assert res["best"]["finetune"]["trial"] == 2 and res["best"]["scratch"]["trial"] == 7
    assert res["best"]["freeze"]["trial"] == 3 and res["missing"] == []
    assert {k: r["trial"] for k, r in res["base_both"].items()} == {"scratch": 0, "finetune": 1}
    assert "+0.25" in res["note"]  # 0.90 - 0.65
    # The searched trials lack a finetune one: the base trained both ways answers.
    no_ft = [r for r in rows if r["trial"] != 2]
    res = compare_transfer(no_ft, "ap50", "maximize")
    assert res["source"] == "base both ways" and res["missing"] == ["finetune"]
    assert res["best"]["finetune"]["trial"] == 1 and res["best"]["scratch"]["trial"] == 0
    assert "the base trained both ways" in res["note"]
    # Neither: stated, nothing compared.
    res = compare_transfer([r for r in no_ft if r["trial"] != 1], "ap50", "maximize")
    assert res["source"] is None and "no fully trained searched finetune trial" in res["note"]


def _history(trial_dir: Path, entries: list[tuple[int, dict[str, float]]]) -> None:
    (trial_dir / "train").mkdir(parents=True)
    (trial_dir / "train" / "eigenspectrum_history.json").write_text(json.dumps({"entries": [
        {"iteration": 16 * e, "epoch": e,
         "layers": {k: {"id": v, "channels": 32.0} for k, v in ids.items()}}
        for e, ids in entries]}))


def test_report_opens_with_the_headline(tmp_path):
    rows = _rows()
    for r in rows:
        r["trial_dir"] = str(tmp_path / f"t{r['trial']}")
    _history(tmp_path / "t0", [(0, {"backbone.layer1": 9.0}), (6, {"backbone.layer1": 5.5})])
    _history(tmp_path / "t3", [(0, {"backbone.layer1": 8.0}), (6, {"backbone.layer1": 7.25})])
    assert read_layer_ids(rows[0]) == ({"backbone.layer1": {"id": 5.5, "channels": 32.0}},
                                       "trained, epoch 6")
    (tmp_path / "t4").mkdir()
    (tmp_path / "t4" / "spectrum.json").write_text(json.dumps({"layers": {
        "neck": {"channels": 64, "measures": {"id_dof": 3.0}}}}))
    assert read_layer_ids(rows[4]) == ({"neck": {"id": 3.0, "channels": 64.0}},
                                       "at initialisation")
    assert read_layer_ids(rows[2]) is None
    report = write_search_report(rows, tmp_path / "report", objectives=[("ap50", "maximize")],
                                 title="demo")
    text = report.read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[:2] == ["## Headline", "## Best candidates"]
    head = text.split("## Best candidates")[0]
    assert "| base | trial 0 (base) | scratch |" in head
    assert "| best searched, MACs <= base | trial 3 | freeze |" in head and "| 0.90 |" in head
    assert "| best searched, any MACs | trial 2 | finetune |" in head
    assert "finetune vs scratch (best of each among the 3 fully trained searched" in head
    assert "| backbone.layer1 | 32 | 5.5 | 32 | 7.25 |" in head
    assert (tmp_path / "report" / "id_base_vs_best.png").stat().st_size > 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())["headline"]
    assert (summary["base_trial"], summary["best_trial"], summary["better"]) == (0, 3, True)
    # No base, no ID: said so, and the report still renders.
    rows = [r for r in _rows() if r["trial"] not in (0, 1)]
    text = write_search_report(rows, tmp_path / "r2", objectives=[("ap50", "maximize")]).read_text()
    assert "no trial is named 'base'" in text and "No ID measurement" in text


# -- the enqueued base, the pinned checkpoint ----------------------------------------------
@pytest.fixture(scope="module")
def backbone_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A randomly initialised base backbone as a checkpoint, and its sha256 by hashlib."""
    from nasdet.train.pretrain import build_source_backbone

    backbone, _ = build_source_backbone(CONFIGS / "tiny_faster_rcnn_synth.py")
    path = tmp_path_factory.mktemp("ckpt") / "b.pth"
    torch.save({"state_dict": backbone.state_dict(), "meta": {}}, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _demo_copy(tmp_path: Path, ckpt: Path, *, pin: str | None = None, **changes) -> Path:
    """The demo config on a copy of its space whose transfer checkpoint is ``ckpt``."""
    space = yaml.safe_load((REPO / "search_spaces/tiny_synth.yaml").read_text())
    space["base"] = str(CONFIGS / "tiny_faster_rcnn_synth.py")
    space["dimensions"]["transfer"]["checkpoint"] = str(ckpt)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    data = yaml.safe_load(DEMO.read_text())
    data["space"] = "space.yaml"
    data["pretrain"] = {"source": str(CONFIGS / "tiny_faster_rcnn_synth.py"),
                        "checkpoint": str(ckpt), "sha256": pin}
    data.update(changes)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_pinned_checkpoint_and_enqueue_are_checked_when_the_config_loads(tmp_path,
                                                                          backbone_ckpt):
    from mmengine.config import Config

    from nasdet.models.utils.build import build_detector
    from nasdet.search import load_search_config
    from nasdet.space import SearchSpace

    ckpt, digest = backbone_ckpt
    cfg = load_search_config(_demo_copy(tmp_path, ckpt, pin=digest))
    assert [e["name"] for e in cfg.enqueue] == ["base", "base_finetune"]
    assert next(s for s in cfg.stages if s.type == "proxy").options["report"] is None
    # The enqueued base is the base config's architecture: built without its transfer
    # recipe (the scratch recipe adds GroupNorm to the FPN), it has the base detector's
    # parameter shapes.
    space = SearchSpace.from_yaml(cfg.space_path)
    base = space.candidate(cfg.enqueue[0]["params"])
    model = build_detector(Config.fromfile(CONFIGS / "tiny_faster_rcnn_synth.py"))
    arch = build_detector(base.to_config(transfer=False))
    assert ({k: v.shape for k, v in arch.state_dict().items()}
            == {k: v.shape for k, v in model.state_dict().items()})
    assert base.to_config().optim_wrapper.optimizer.lr == 0.06
    with pytest.raises(NasdetError, match="pretrain.sha256: .* expected 0+: not the pinned"):
        load_search_config(_demo_copy(tmp_path, ckpt, pin="0" * 64))
    other = tmp_path / "other.pth"
    other.write_bytes(ckpt.read_bytes())
    path = _demo_copy(tmp_path, other, pin=digest)
    space_data = yaml.safe_load((tmp_path / "space.yaml").read_text())
    space_data["dimensions"]["transfer"]["checkpoint"] = str(ckpt)  # not the pinned file
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space_data, sort_keys=False))
    with pytest.raises(NasdetError, match="pretrain.checkpoint: .* is not what the transfer"):
        load_search_config(path)
    bad = yaml.safe_load(DEMO.read_text())["enqueue"]
    bad[0]["params"]["widths.0"] = 33
    with pytest.raises(NasdetError, match=r"enqueue\[0\]\.params\.widths\.0: "):
        load_search_config(_demo_copy(tmp_path, ckpt, pin=digest, enqueue=bad))


def test_enqueued_candidates_run_first_once_within_n_trials(tmp_path, backbone_ckpt):
    from nasdet.search import load_search_config
    from nasdet.search.trials import ENQUEUED_ATTR, enqueue_listed, trial_params

    ckpt, digest = backbone_ckpt
    cfg = load_search_config(_demo_copy(tmp_path, ckpt, pin=digest))
    study = optuna.create_study(direction="maximize")
    assert enqueue_listed(study, cfg) == ["base", "base_finetune"]
    assert enqueue_listed(study, cfg) == []  # waiting already: not twice
    waiting = study.get_trials(deepcopy=False)
    assert [trial_params(t) for t in waiting] == [e["params"] for e in cfg.enqueue]
    from nasdet.space import SearchSpace

    trial = study.ask()  # the first enqueued trial, its params fixed
    assert trial.user_attrs[ENQUEUED_ATTR] == "base"
    candidate = SearchSpace.from_yaml(cfg.space_path).suggest(trial)
    assert dict(candidate.params) == cfg.enqueue[0]["params"]
    one = load_search_config(_demo_copy(tmp_path, ckpt, pin=digest, n_trials=1))
    assert enqueue_listed(optuna.create_study(), one) == ["base"]  # n_trials leaves room for 1


def test_shipped_source_backbone_loads_safely_matches_its_sha256_and_fits():
    from nasdet.train.pretrain import build_source_backbone
    from nasdet.utils.checkpoint import check_state_dict_fits, load_checkpoint_file

    pinned = yaml.safe_load(DEMO.read_text())["pretrain"]
    assert pinned["checkpoint"] == str(SHIPPED.relative_to(REPO))
    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() == pinned["sha256"]
    assert SHIPPED.stat().st_size < 10 * 2**20
    ckpt = load_checkpoint_file(SHIPPED)  # torch.load(weights_only=True)
    assert ckpt["meta"]["epochs"] == 24 and ckpt["meta"]["val_top1"] >= 0.85
    backbone, _ = build_source_backbone(CONFIGS / "tiny_faster_rcnn_synth.py")
    check_state_dict_fits(backbone, ckpt["state_dict"], file=SHIPPED, strict=True)
    result = backbone.load_state_dict(ckpt["state_dict"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for name, value in backbone.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"][name].to(value.dtype)), name


def test_ray_searcher_runs_the_enqueued_base_first_and_labels_its_row(tmp_path, backbone_ckpt):
    from nasdet.search import load_search_config
    from nasdet.search.ray_driver import fidelities
    from nasdet.search.ray_tune import SpaceSampler, StageAwareOptunaSearch
    from nasdet.search.ray_tune import result_row as _row
    from nasdet.search.trials import enqueue_listed

    ckpt, digest = backbone_ckpt
    cfg = load_search_config(_demo_copy(tmp_path, ckpt, pin=digest))
    searcher = StageAwareOptunaSearch(
        len(cfg.stages), space=SpaceSampler(cfg.space_path),
        sampler=optuna.samplers.RandomSampler(seed=0), metric="ap50", mode="max")
    assert enqueue_listed(searcher._ot_study, cfg) == ["base", "base_finetune"]
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert first == {**cfg.enqueue[0]["params"], "enqueued_as": "base"}
    assert second == {**cfg.enqueue[1]["params"], "enqueued_as": "base_finetune"}
    assert "enqueued_as" not in searcher.suggest("c")
    done = {"stages_done": len(cfg.stages), "ap50": 0.5}
    row = _row("a", first, done, None, cfg, tag="1_x")
    assert row["enqueued_as"] == "base" and "param/enqueued_as" not in row
    # report: null: the proxy stage is no ASHA rung; the two train stages are.
    assert fidelities(cfg, 2) == (0.0, 0.0, 1.0, 2.0)
