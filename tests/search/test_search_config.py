"""Search config validation: every mistake is one error naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nasdet.errors import NasdetError
from nasdet.search import load_search_config
from tests.conftest import REPO

GOOD = {
    "space": "space.yaml",
    "n_trials": 3,
    "objectives": [{"metric": "ap50", "direction": "maximize"}],
    "stages": [{"type": "complexity"},
               {"type": "proxy", "proxies": ["id_mean", "params"], "num_images": 2},
               {"type": "train", "name": "short", "epochs": 1},
               {"type": "train", "name": "full", "epochs": 2}],
}


def _write(tmp_path: Path, data: dict) -> Path:
    (tmp_path / "space.yaml").write_text("name: x\n")
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_search_configs_are_valid():
    for path in sorted((REPO / "configs/search").glob("*.yaml")):
        cfg = load_search_config(path)
        assert cfg.space_path.is_file()


def test_good_config_and_its_metrics(tmp_path):
    cfg = load_search_config(_write(tmp_path, GOOD))
    assert [s.name for s in cfg.stages] == ["complexity", "proxy", "short", "full"]
    assert cfg.metrics == {"params", "macs", "proxy/id_mean", "proxy/params", "ap", "ap50",
                           "short/ap", "short/ap50", "full/ap", "full/ap50"}
    assert cfg.stages[1].options["report"] == "id_mean"
    assert cfg.sampler["type"] == "tpe" and not cfg.multi_objective
    assert load_search_config(_write(tmp_path, GOOD), n_trials=7).n_trials == 7


@pytest.mark.parametrize(("change", "key", "message"), [
    ({"colour": "red"}, "colour", "unknown key"),
    ({"space": "nowhere.yaml"}, "space", "not found"),
    ({"n_trials": 0}, "n_trials", "positive integer"),
    ({"objectives": [{"metric": "accuracy"}]}, r"objectives\[0\]\.metric", "not produced"),
    ({"objectives": [{"metric": "ap", "direction": "up"}]}, r"objectives\[0\]\.direction",
     "maximize or minimize"),
    ({"stages": [{"type": "dance"}]}, r"stages\[0\]\.type", "must be one of"),
    ({"stages": [{"type": "proxy", "proxies": ["magic"]}]}, r"stages\[0\]\.proxies\[0\]",
     "unknown proxy"),
    ({"stages": [{"type": "train", "epochs": 3, "name": "a"},
                 {"type": "train", "epochs": 2, "name": "b"}]}, "stages", "must increase"),
    ({"stages": [{"type": "train", "epochs": 1, "lr": 3}]}, r"stages\[0\]\.lr", "unknown key"),
    ({"stages": [{"type": "proxy", "n_startup_trials": -1}]},
     r"stages\[0\]\.n_startup_trials", "non-negative integer, got -1"),
    ({"sampler": {"type": "grid"}}, r"sampler\.type", "must be one of"),
])
def test_bad_configs_name_file_and_key(tmp_path, change, key, message):
    path = _write(tmp_path, {**GOOD, **change})
    with pytest.raises(NasdetError, match=message) as err:
        load_search_config(path)
    assert err.value.file == str(path.absolute())
    assert __import__("re").fullmatch(key, err.value.key)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(NasdetError, match="not found"):
        load_search_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [unclosed\n")
    with pytest.raises(NasdetError, match="not valid YAML"):
        load_search_config(bad)


def test_proxy_rungs_are_the_proxy_stages_report_proxies(tmp_path):
    from nasdet.search.run import proxy_rungs

    rung = {**GOOD, "stages": [dict(s, report="id_mean") if s["type"] == "proxy" else s
                               for s in GOOD["stages"]]}
    assert proxy_rungs(load_search_config(_write(tmp_path, rung))) == ("id_mean",)
    none = {**GOOD, "stages": [dict(s, report=None) if s["type"] == "proxy" else s
                               for s in GOOD["stages"]]}
    assert proxy_rungs(load_search_config(_write(tmp_path, none))) == ()
