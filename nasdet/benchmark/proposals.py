"""ID-guided proposals over a benchmark table, and the rows they add to it.

The search's ID-guided step (``id_guided`` in a search config) proposes, after a
trained candidate, the same architecture with its backbone widths proportional to its
stages' ID at the end of training, at no more MACs
(:func:`nasdet.space.derive_widths.propose_candidate`). Over a table, each
architecture's proposal is made by the same function from its row's own stage IDs at
the replay's target epoch. A proposal that is an architecture of the table is replayed
by look-up; one that is not must be trained: :func:`add_proposals` writes it to the
table's ``proposals.json`` (``arch_id`` from :data:`PROPOSAL_IDS_FROM` on, the source row
and the rule), and the same ``tools/proxy_benchmark.py`` command that builds the table
trains it as a row of its own (``origin: id_guided``), so the next replay finds it.

Proposal rows are not part of the sampled population: the proxy statistics
(:mod:`nasdet.benchmark.analysis`) use sampled rows only, replays use every row.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from nasdet.benchmark.table import Benchmark, row_name
from nasdet.errors import NasdetError
from nasdet.utils.io import atomic_write_json

#: The table's file of proposals to train, and its format tag.
PROPOSALS_FILE = "proposals.json"
PROPOSALS_FORMAT = "nasdet.detection-benchmark-proposals/1"
#: Sampled architectures have ids below this, proposals from it on: a table extended to
#: more sampled architectures (a larger ``--num-archs``) never meets a proposal's id.
PROPOSAL_IDS_FROM = 10_000
#: The rule of the shipped ID-guided search (configs/search/tiny_synth_id_guided.yaml).
RULE = {"dimension": "widths", "metric": "macs", "budget": 1.0}

_STAGE = re.compile(r"^backbone\.layer(\d+)$")


def stage_ids(row: dict[str, Any], epoch: int) -> list[float]:
    """The row's backbone stage IDs after ``epoch`` (0: at initialisation), stage order."""
    stages = sorted((int(m.group(1)), name) for name in row["id"]
                    if (m := _STAGE.match(name)))
    if not stages:
        raise NasdetError("the row has no backbone stage IDs", key=row_name(
            row["arch_id"], row["seed"]))
    return [float(row["id"][name][epoch]) for _, name in stages]


def row_proposal(space: Any, row: dict[str, Any], epoch: int,
                 rule: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ID-guided proposal of one row's architecture; never raises.

    Returns:
        ``source_arch``, ``source_seed``, ``epoch``, ``rule``, and either ``key`` and
        ``params`` of the proposal (``None`` when the rule keeps the row's own widths)
        or ``reason`` (why none can be made).
    """
    from nasdet.space.derive_widths import propose_candidate

    rule = {**RULE, **(rule or {})}
    out: dict[str, Any] = {"source_arch": int(row["arch_id"]), "source_seed": int(row["seed"]),
                           "epoch": int(epoch), "rule": rule, "key": None, "params": None,
                           "reason": None}
    try:
        made = propose_candidate(space, space.candidate(row["params"]), rule["dimension"],
                                 stage_ids(row, epoch), metric=rule["metric"],
                                 budget=rule["budget"])
    except NasdetError as exc:
        out["reason"] = str(exc)
        return out
    if made["widths"] == made["old_widths"]:
        out["reason"] = "the ID-proportional widths are the architecture's own"
    else:
        out.update(key=made["key"], params=made["params"], widths=made["widths"],
                   cost_ratio=made["cost_ratio"])
    return out


def table_proposals(bench: Benchmark, space: Any, epoch: int, *,
                    cache: str | Path | None = None,
                    rule: dict[str, Any] | None = None) -> dict[int, dict[str, Any]]:
    """:func:`row_proposal` of every architecture's first-seed row: ``{arch_id: ...}``.

    ``cache`` (a JSON file) keeps them between runs, keyed by row, epoch and rule: a
    proposal costs a few dozen MAC counts.
    """
    rule = {**RULE, **(rule or {})}
    tag = json.dumps({"epoch": int(epoch), "rule": rule}, sort_keys=True)
    stored: dict[str, Any] = {}
    if cache is not None and Path(cache).is_file():
        try:
            stored = json.loads(Path(cache).read_text())
        except ValueError:
            stored = {}
    if stored.get("tag") != tag:
        stored = {"tag": tag, "rows": {}}
    out, fresh = {}, False
    for row in bench.first_seed():
        name = row_name(row["arch_id"], row["seed"])
        if name not in stored["rows"]:
            stored["rows"][name] = row_proposal(space, row, epoch, rule)
            fresh = True
        out[int(row["arch_id"])] = stored["rows"][name]
    if cache is not None and fresh:
        atomic_write_json(cache, stored)
    return out


def read_proposals(out_dir: str | Path) -> list[dict[str, Any]]:
    """The proposals of a table directory to train (``[]`` without a file)."""
    path = Path(out_dir) / PROPOSALS_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise NasdetError(f"not JSON ({exc})", file=path) from None
    if not isinstance(data, dict) or data.get("format") != PROPOSALS_FORMAT or \
            not isinstance(data.get("proposals"), list):
        raise NasdetError(f"not a proposals file of format {PROPOSALS_FORMAT}", file=path)
    low = [p["arch_id"] for p in data["proposals"] if int(p["arch_id"]) < PROPOSAL_IDS_FROM]
    if low:  # they would take the ids of sampled architectures when the table grows
        raise NasdetError(f"proposal arch_id {low[0]} is below {PROPOSAL_IDS_FROM}, the range "
                          "of sampled architectures: renumber the proposals from "
                          f"{PROPOSAL_IDS_FROM}", file=path, key="arch_id")
    return list(data["proposals"])


def add_proposals(out_dir: str | Path, proposals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append the proposals not yet in the table or its file; the ones added.

    Each gets the next free ``arch_id`` (from :data:`PROPOSAL_IDS_FROM` on) and keeps its
    source row, epoch and rule; architectures already trained (by key) or listed are skipped.
    """
    from nasdet.benchmark.table import load_benchmark

    out_dir = Path(out_dir)
    listed = read_proposals(out_dir)
    known = {p["key"] for p in listed}
    known |= {r["key"] for r in load_benchmark(out_dir).rows}
    added = []
    next_id = max([PROPOSAL_IDS_FROM - 1, *(int(p["arch_id"]) for p in listed)]) + 1
    for prop in proposals:
        if prop.get("key") is None or prop["key"] in known:
            continue
        known.add(prop["key"])
        entry = {"arch_id": next_id, "key": prop["key"], "params": prop["params"],
                 "origin": "id_guided", "source_arch": prop["source_arch"],
                 "source_seed": prop["source_seed"], "epoch": prop["epoch"],
                 "rule": prop["rule"]}
        added.append(entry)
        next_id += 1
    if added:
        atomic_write_json(out_dir / PROPOSALS_FILE, {
            "format": PROPOSALS_FORMAT, "proposals": [*listed, *added],
            "units": "arch_id: the row's id in the table; epoch: the source row's epoch "
                     "whose stage IDs made the proposal"})
    return added
