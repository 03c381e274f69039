"""The benchmark table: rows on disk, CSV/JSON assembled from them, the loader, the plan."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from nasdet.benchmark.build import BenchmarkPlan, cpu_of, sample_architectures
from nasdet.benchmark.proposals import PROPOSAL_IDS_FROM
from nasdet.benchmark.table import (
    FORMAT,
    Benchmark,
    load_benchmark,
    machine_of,
    machine_scales,
    write_row,
)
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
    with pytest.raises(NasdetError, match="proposals") as err:  # their ids come after
        BenchmarkPlan(space=str(SPACE), num_archs=PROPOSAL_IDS_FROM + 1)
    assert err.value.key == "--num-archs"


def test_architectures_are_a_function_of_their_id():
    from nasdet.space import SearchSpace

    space = SearchSpace.from_yaml(SPACE)
    ten = sample_architectures(space, 10, 0)
    assert sample_architectures(space, 12, 0)[:10] == ten  # extending keeps the first ones
    assert len({space.candidate(p).key for p in ten}) == 10
    assert sample_architectures(space, 3, 1) != ten[:3]


def _timed_rows(machines: dict[str, float], per_machine: int = 6) -> list[dict]:
    """Rows whose CPU seconds follow 2e-6 * MACs^0.9 * params^0.05, times the machine's
    slowness; MACs and #params vary independently so the fit is determined."""
    rng = np.random.default_rng(1)
    rows = []
    for name, slowness in machines.items():
        for _ in range(per_machine):
            macs, n_params = float(rng.uniform(1e8, 1e9)), float(rng.uniform(1e6, 5e6))
            total = slowness * 2e-6 * macs ** 0.9 * n_params ** 0.05
            rows.append({"macs": macs, "n_params": n_params, "train_cpu_seconds": total,
                         "epoch_cpu_seconds": [total / 4] * 4, "machine": {"cpu": name}})
    return rows


def test_machine_scales_put_cpu_seconds_on_the_reference_machine():
    rows = _timed_rows({"slow": 1.0, "fast": 0.5, "faster": 0.25})
    rows += _timed_rows({"slow": 1.0}, per_machine=2)  # the reference: the most rows
    scales = machine_scales(rows)
    # A noiseless power law: the least-squares offsets are exact up to rounding.
    assert scales["slow"] == 1.0
    assert scales["fast"] == pytest.approx(2.0, rel=1e-9)
    assert scales["faster"] == pytest.approx(4.0, rel=1e-9)
    bench = Benchmark(rows)
    fast = next(r for r in rows if r["machine"]["cpu"] == "fast")
    assert bench.epoch_costs(fast) == pytest.approx([2.0 * c for c in fast["epoch_cpu_seconds"]])


def test_cpus_named_alike_are_told_apart_by_family_and_model():
    # Two processors of a 2-core virtual machine: only the first block is read.
    zen = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 1\n"
           "model name\t: AMD EPYC\nstepping\t: 2\nflags\t\t: fpu avx2\n\n"
           "processor\t: 1\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: other\n")
    assert cpu_of(zen) == {"cpu": "AMD EPYC", "cpu_id": "cpu family 23 model 1 stepping 2"}
    # A CPU that gives no numbers (e.g. not x86) is named alone.
    assert "cpu_id" not in cpu_of("model name\t: Neoverse\n")
    rows = _timed_rows({"AMD EPYC": 1.0}, per_machine=8) + _timed_rows({"AMD EPYC": 4.0})
    for row in rows[8:]:
        row["machine"]["cpu_id"] = cpu_of(zen)["cpu_id"]
    assert machine_of(rows[0]) == "AMD EPYC"  # rows recorded before the numbers were
    slow = machine_of(rows[-1])
    assert slow == "AMD EPYC (cpu family 23 model 1 stepping 2)"
    # Pooled under one name the 4x slower machine would take the faster one's scale.
    assert machine_scales(rows)[slow] == pytest.approx(0.25, rel=1e-9)


def test_machine_scales_are_one_where_nothing_can_be_compared():
    assert machine_scales(_timed_rows({"only": 3.0})) == {"only": 1.0}
    # Three reference rows cannot fit the architecture terms and an offset.
    few = _timed_rows({"a": 1.0}, per_machine=3) + _timed_rows({"b": 0.5}, per_machine=2)
    assert machine_scales(few) == {"a": 1.0, "b": 1.0}
    unnamed = [{k: v for k, v in r.items() if k != "machine"} for r in _timed_rows({"x": 1.0})]
    assert machine_scales(unnamed) == {"unknown": 1.0}
    assert all(math.isfinite(v) for v in machine_scales(unnamed).values())
