"""The benchmark table: rows on disk, CSV/JSON assembled from them, the loader, the plan."""

from __future__ import annotations

import csv
import json

import pytest

from nasdet.benchmark.build import BenchmarkPlan, sample_architectures
from nasdet.benchmark.table import FORMAT, load_benchmark, write_row
from nasdet.errors import NasdetError
from tests.benchmark.conftest import SPACE, make_rows


def test_rows_csv_and_json_agree(synthetic_table):
    bench = load_benchmark(synthetic_table)
    again = load_benchmark(synthetic_table / "table.json")
    assert [r["key"] for r in bench.rows] == [r["key"] for r in again.rows]
    assert len(bench.rows) == 40 + 20 and bench.epochs == 6
    with open(synthetic_table / "table.csv") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == len(bench.rows)
    first = lines[0]
    assert float(first["ap_e06"]) == pytest.approx(bench.rows[0]["ap"][5], rel=1e-5)
    assert float(first["id_e01/backbone.layer1"]) == 11.0
    assert first["param/fc_width"] == str(bench.rows[0]["params"]["fc_width"])
    assert json.loads((synthetic_table / "meta.json").read_text())["format"] == FORMAT


def test_pairs_first_seed_and_target(synthetic_table):
    bench = load_benchmark(synthetic_table)
    pairs = bench.seed_pairs()
    assert len(pairs) == 20
    assert all(a["arch_id"] == b["arch_id"] and (a["seed"], b["seed"]) == (0, 1)
               for a, b in pairs)
    first = bench.first_seed()
    assert [r["arch_id"] for r in first] == list(range(40))
    assert bench.target(first, "ap", 2) == [r["ap"][1] for r in first]
    with pytest.raises(NasdetError, match="outside the table"):
        bench.target(first, "ap", 7)


def test_a_row_of_another_format_is_refused(tmp_path):
    row = make_rows(num_archs=1, pairs=0)[0]
    path = write_row(tmp_path, row)
    data = json.loads(path.read_text())
    data["format"] = "nasdet.detection-benchmark/0"
    path.write_text(json.dumps(data))
    with pytest.raises(NasdetError, match="format"):
        load_benchmark(tmp_path)
    with pytest.raises(NasdetError, match="not found"):
        load_benchmark(tmp_path / "nothing")


def test_plan_interleaves_repeats_and_covers_every_job():
    plan = BenchmarkPlan(space=str(SPACE), num_archs=10, repeats=4)
    jobs = plan.jobs()
    assert len(jobs) == len(set(jobs)) == 14
    assert jobs[:7] == [(0, 0), (1, 0), (0, 1), (2, 0), (3, 0), (1, 1), (4, 0)]
    assert {a for a, s in jobs if s == 1} == {0, 1, 2, 3}


def test_architectures_are_a_function_of_their_id():
    from nasdet.space import SearchSpace

    space = SearchSpace.from_yaml(SPACE)
    ten = sample_architectures(space, 10, 0)
    assert sample_architectures(space, 12, 0)[:10] == ten  # extending keeps the first ones
    assert len({space.candidate(p).key for p in ten}) == 10
    assert sample_architectures(space, 3, 1) != ten[:3]
