"""ID-guided proposals over a table: the search's rule, the table's file, the replay."""

from __future__ import annotations

import json

import pytest

from nasdet.benchmark.proposals import (
    PROPOSAL_IDS_FROM,
    PROPOSALS_FILE,
    add_proposals,
    read_proposals,
    row_proposal,
    stage_ids,
    table_proposals,
)
from nasdet.benchmark.replay import Strategy, replay
from nasdet.benchmark.table import load_benchmark
from nasdet.errors import NasdetError
from tests.benchmark.conftest import SPACE


def _with_stage_ids(row: dict, ids: list[float]) -> dict:
    """The row with ``ids`` as its four stages' ID at every epoch (FPN levels beside)."""
    epochs = len(row["ap"]) + 1
    row = {**row, "id": {f"backbone.layer{i + 1}": [v] * epochs for i, v in enumerate(ids)}}
    row["id"]["neck.0"] = [1.0] * epochs
    return row


def test_a_rows_proposal_is_the_searchs_rule_on_its_stage_ids(synthetic_table):
    from nasdet.space import SearchSpace
    from nasdet.space.derive_widths import propose_candidate

    space = SearchSpace.from_yaml(SPACE)
    row = load_benchmark(synthetic_table).first_seed()[0]
    # Listed out of order and with FPN levels: the stages are read in stage order.
    row = _with_stage_ids(row, [8.0, 8.0, 16.0, 32.0])
    row["id"] = dict(reversed(list(row["id"].items())))
    assert stage_ids(row, 6) == [8.0, 8.0, 16.0, 32.0]
    prop = row_proposal(space, row, 6)
    direct = propose_candidate(space, space.candidate(row["params"]), "widths",
                               [8.0, 8.0, 16.0, 32.0], metric="macs", budget=1.0)
    if direct["widths"] == direct["old_widths"]:
        assert prop["key"] is None and "own" in prop["reason"]
    else:
        assert prop["key"] == direct["key"] == space.candidate(prop["params"]).key
        assert prop["cost_ratio"] <= 1.0 and prop["reason"] is None
    assert prop["source_arch"] == row["arch_id"] and prop["rule"]["metric"] == "macs"
    # A row without stage IDs gets a reason, not an exception.
    bad = {**row, "id": {"neck.0": [1.0] * 7}}
    with pytest.raises(NasdetError, match="no backbone stage"):
        stage_ids(bad, 6)
    assert "no backbone stage IDs" in row_proposal(space, bad, 6)["reason"]


def test_proposals_file_numbers_new_architectures_apart_from_the_sampled(synthetic_table):
    bench = load_benchmark(synthetic_table)
    rows = bench.first_seed()
    base = {"source_seed": 0, "epoch": 6, "rule": {"dimension": "widths"}}
    new = [{**base, "key": "k1", "params": {"a": 1}, "source_arch": 3},
           {**base, "key": "k1", "params": {"a": 1}, "source_arch": 4},  # the same arch
           {**base, "key": rows[5]["key"], "params": rows[5]["params"], "source_arch": 2},
           {**base, "key": None, "params": None, "source_arch": 1}]  # no proposal
    added = add_proposals(synthetic_table, new)
    first = PROPOSAL_IDS_FROM  # not 40: a table grown to more sampled archs keeps its ids
    assert [(p["arch_id"], p["key"], p["source_arch"]) for p in added] == [(first, "k1", 3)]
    assert add_proposals(synthetic_table, new) == []
    more = add_proposals(synthetic_table, [{**base, "key": "k2", "params": {"a": 2},
                                            "source_arch": 7}])
    assert [p["arch_id"] for p in more] == [first + 1]
    assert [p["key"] for p in read_proposals(synthetic_table)] == ["k1", "k2"]
    # A file whose proposals sit among the sampled ids is refused, naming the key.
    data = json.loads((synthetic_table / PROPOSALS_FILE).read_text())
    data["proposals"][1]["arch_id"] = 40
    (synthetic_table / PROPOSALS_FILE).write_text(json.dumps(data))
    with pytest.raises(NasdetError, match="arch_id 40 is below") as err:
        read_proposals(synthetic_table)
    assert err.value.key == "arch_id"
    (synthetic_table / PROPOSALS_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(NasdetError, match="proposals file"):
        read_proposals(synthetic_table)


def test_id_guided_replay_trains_a_proposal_next_and_lists_the_missing(synthetic_table):
    bench = load_benchmark(synthetic_table)
    rows = bench.first_seed()
    plain = replay(bench, Strategy("random"), target_epoch=6, seed=0)
    first = plain.trained[0]  # the sampler's first pick (the same seed: the same pick)
    # Every architecture proposes the next one, but the sixth of the chain proposes one
    # the table does not hold: the chain stops there and the sampler goes on.
    proposals = {r["arch_id"]: {"key": rows[(i + 1) % len(rows)]["key"]}
                 for i, r in enumerate(rows)}
    broken = (first + 5) % 40
    proposals[broken] = {"key": "not-in-the-table"}
    trace = replay(bench, Strategy("random+id", id_guided=True), target_epoch=6, seed=0,
                   proposals=proposals)
    assert sorted(trace.trained) == list(range(40))
    assert trace.trained[:6] == [(first + i) % 40 for i in range(6)]
    assert trace.missing == [(broken, "not-in-the-table")] and plain.missing == []
    with pytest.raises(ValueError, match="ID-guided"):
        replay(bench, Strategy("g", id_guided=True), target_epoch=6, seed=0)


def test_table_proposals_are_cached(synthetic_table, tmp_path):
    from nasdet.space import SearchSpace

    space = SearchSpace.from_yaml(SPACE)
    bench = load_benchmark(synthetic_table)
    bench.rows = [_with_stage_ids(r, [8.0, 8.0, 16.0, 32.0]) for r in bench.rows[:3]]
    cache = tmp_path / "cache.json"
    first = table_proposals(bench, space, 6, cache=cache)
    assert sorted(first) == sorted({r["arch_id"] for r in bench.rows})
    stored = json.loads(cache.read_text())
    for value in stored["rows"].values():  # a cached entry is used as it is
        value["reason"] = "from the cache"
    cache.write_text(json.dumps(stored))
    again = table_proposals(bench, space, 6, cache=cache)
    assert {p["reason"] for p in again.values()} == {"from the cache"}
    assert {p["reason"] for p in table_proposals(bench, space, 5, cache=cache).values()} \
        != {"from the cache"}  # another epoch: computed again
