"""The trainable of a Ray Tune trial: one candidate, its stages, one report per stage.

:func:`make_trainable` wraps :func:`run_trial` for ``tune.with_resources``; the driver's
own terminal lines (:func:`say`) go where :func:`lines_to` points them, never into a
trial's log.

After every training epoch the trial hands Tune a ``tune.Checkpoint`` of its state
(:func:`trial_checkpoint`: the latest epoch checkpoint and the stage progress, a few
small files), on the epoch's report with ``report_every_epoch``, else on a report of its
own (``score`` NaN, ``epoch`` 0: no rung). Tune copies it into the experiment's storage,
so when a trial's worker or node is lost (Tune retries it, ``FailureConfig.max_failures``)
or the driver is (``Tuner.restore``), the trial continues from that epoch on whatever node
runs it: :func:`restore_checkpoint` rebuilds its directory from ``tune.get_checkpoint()``
and the evaluator skips the finished stages. A trial that raised is failed for good: its
retries raise the same error at once (``failed.json`` in its directory).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import ray
from ray import tune

from nasdet.search.config import SearchConfig, Stage
from nasdet.search.evaluator import (
    CandidateRejected,
    TrialEvaluator,
    clear_trial_dir,
    recorded_stages,
)
from nasdet.search.ray_train import (
    WORKER_GROUP_FILE,
    LostWorkers,
    WorkerScaling,
    release_stale_worker_group,
    train_stage,
)
from nasdet.search.trials import (
    ENQUEUED_ATTR,
    ID_GUIDED_ATTR,
    TRIAL_LOG,
    proxy_score,
    stage_score,
)
from nasdet.utils.output import output_to

#: Keys every result of a trial carries besides the evaluator's metrics.
BOOKKEEPING_KEYS = ("score", "fidelity", "epoch", "proxy_score", "stage", "stage_name",
                    "stages_done", "node_id", "trial_dir", "candidate_key", "rejected")


# Tune's own result keys (not the trial's metrics).
TUNE_KEYS = {"training_iteration", "time_total_s", "time_this_iter_s", "timestamp", "date",
              "time_since_restore", "iterations_since_restore", "timesteps_since_restore",
              "timesteps_total", "episodes_total", "checkpoint_dir_name", "done", "trial_id",
              "experiment_tag", "should_checkpoint", "pid", "hostname", "node_ip", "config"}


#: A trial that raised keeps its error here: a retry raises it again at once.
FAILED_FILE = "failed.json"
#: The train-dir files a checkpoint carries besides the epoch checkpoint itself.
TRAIN_FILES = ("metrics.json", "eigenspectrum_history.json")

# Where the driver's own lines go while a search runs (None: sys.stdout).
_terminal: list[TextIO] = []


def say(line: str) -> None:
    """One of the driver's own lines, to the terminal (not into search.log)."""
    print(line, file=_terminal[-1] if _terminal else sys.stdout, flush=True)


@contextlib.contextmanager
def lines_to(out: TextIO) -> Iterator[None]:
    """Send the driver's own lines (:func:`say`) to ``out`` inside the block."""
    _terminal.append(out)
    try:
        yield
    finally:
        _terminal.pop()


# ------------------------------------------------------------------------------ trials
@dataclass(frozen=True)
class TrialSpec:
    """Everything a trial needs on whatever node it runs (sent with the trainable).

    Args:
        config: The validated search config.
        work_dir: Absolute work dir (must be the same path on every node).
        data_root: Absolute dataset root, resolved by the driver.
        cfg_options: Overrides applied to every candidate's config.
        keep_checkpoints: Keep trials' training checkpoints.
        fidelities: Per stage, the fidelity its result reports (0: not scored).
        scaling: The Ray Train workers of its train stages (one: the trial's process).
        experiment_dir: The Tune experiment's storage (``trial_<id>/checkpoint_*``).
    """

    config: SearchConfig
    work_dir: Path
    data_root: Path | None
    cfg_options: dict[str, Any] = field(default_factory=dict)
    keep_checkpoints: bool = False
    fidelities: tuple[float, ...] = ()
    scaling: WorkerScaling = field(default_factory=WorkerScaling)
    experiment_dir: Path | None = None


def run_trial(spec: TrialSpec, params: dict[str, Any]) -> None:
    """The body of one Tune trial: rebuild the candidate, run its stages, report each.

    Args:
        spec: The search's trial spec.
        params: The trial's config as Tune passes it (the sampled parameters).
    """
    config = spec.config
    trial_id = tune.get_context().get_trial_id()
    trial_dir = spec.work_dir / "trials" / trial_id
    scaling = getattr(spec, "scaling", None) or WorkerScaling()  # older pickled specs
    on_workers = partial(_train_on_workers, scaling=scaling,
                         user_options={**config.cfg_options, **spec.cfg_options})
    evaluator = TrialEvaluator(
        config, keep_checkpoints=spec.keep_checkpoints, data_root=spec.data_root,
        cfg_options=spec.cfg_options,
        train_stage=on_workers if scaling.distributed else None)
    params = {k: v for k, v in params.items()
              if k not in (ID_GUIDED_ATTR, ENQUEUED_ATTR)}  # not space params
    candidate = evaluator.space.candidate(params)
    base = {"node_id": ray.get_runtime_context().get_node_id(), "trial_dir": str(trial_dir),
            "candidate_key": candidate.key}
    pending = {o.metric: math.nan for o in config.objectives}
    n_stages = len(config.stages)

    def result(stage: Stage | None, index: int, metrics: dict[str, float],
               done: bool = True) -> dict[str, Any]:
        score = stage_score(config, stage, metrics) if stage is not None else None
        proxy = proxy_score(stage, metrics) if stage is not None else None
        scored = score is not None and math.isfinite(score)
        rung = scored or (proxy is not None and math.isfinite(proxy))
        return {**pending, **metrics, **base, "stage": index,
                "stage_name": stage.name if stage is not None else "",
                "stages_done": index + int(done) if stage is not None else 0,
                "score": float(score) if scored else math.nan,
                "proxy_score": float(proxy) if proxy is not None else math.nan,
                # Only a scored report is on the epoch axis (0: below every rung).
                "epoch": int(metrics.get("epochs", 0)) if scored else 0,
                "fidelity": spec.fidelities[index] if rung and stage is not None else 0.0}

    if scaling.distributed:  # what an attempt lost with its driver's node still holds
        release_stale_worker_group(trial_dir)
    failed = trial_dir / FAILED_FILE
    if failed.is_file():  # it raised before: an error of the trial, not a lost process
        raise _stored_error(failed)
    recorded = _finished_record(trial_dir, dict(candidate.params), n_stages)
    if recorded is not None:  # finished before the driver was killed: no second run
        last = n_stages - 1
        tune.report(result(config.stages[last], last, recorded))
        return
    # Tune retries or restores the trial (or restarts it, not knowing a stored checkpoint).
    stored = getattr(spec, "experiment_dir", None)  # older pickled specs
    checkpoint = newest_checkpoint(tune.get_checkpoint(),
                                   stored / tune_trial_folder(trial_id) if stored else None)
    if checkpoint is not None:
        restore_checkpoint(checkpoint, trial_dir)
    else:
        clear_trial_dir(trial_dir)

    clock = {"start": time.perf_counter(), "reporting": 0.0}
    reached = {"done": 0}
    latest: dict[str, Any] = {"metrics": {}, "saved": None}  # what a checkpoint report says

    def send(values: dict[str, Any], saved: Path | None = None) -> None:
        with trial_checkpoint(trial_dir, saved) as ckpt:
            tune.report(values, checkpoint=ckpt)

    def report(stage: Stage, index: int, metrics: dict[str, float]) -> None:
        reached["done"] = index + 1
        latest["metrics"] = metrics
        now = time.perf_counter()
        inside = now - clock["start"] - clock["reporting"]
        # A train stage's end carries its last epoch checkpoint with the stage recorded.
        saved = latest["saved"] if stage.type == "train" else None
        send(result(stage, index, {**metrics, "seconds/evaluator": inside}), saved)
        clock["reporting"] += time.perf_counter() - now

    def report_epoch(stage: Stage, index: int, epoch: int, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        inside = now - clock["start"] - clock["reporting"]
        saved = latest.pop("pending", None)
        send(result(stage, index, {**metrics, "epochs": float(epoch),
                                   "seconds/evaluator": inside}, done=False), saved)
        clock["reporting"] += time.perf_counter() - now

    def on_checkpoint(stage: Stage, index: int, epoch: int, path: Path) -> None:
        latest["saved"] = path
        if stage.options.get("report_every_epoch"):
            latest["pending"] = path  # goes with the epoch's report, after validation
            return
        now = time.perf_counter()
        inside = now - clock["start"] - clock["reporting"]
        values = result(stage, index, {**latest["metrics"], "epochs": float(epoch),
                                       "seconds/evaluator": inside}, done=False)
        # Not a step of the epoch axis: no score, below every rung.
        send({**values, "score": math.nan, "epoch": 0, "fidelity": 0.0}, path)
        clock["reporting"] += time.perf_counter() - now

    def restored(stage: Stage, index: int, metrics: dict[str, float]) -> None:
        reached["done"] = index + 1
        latest["metrics"] = metrics

    with output_to(trial_dir / TRIAL_LOG):
        try:
            evaluator.run(candidate, trial_dir, report, epoch_report=report_epoch,
                          resume=checkpoint is not None, restored=restored,
                          on_checkpoint=on_checkpoint)
        except CandidateRejected as exc:
            inside = time.perf_counter() - clock["start"] - clock["reporting"]
            stage = config.stages[min(reached["done"], n_stages - 1)].name
            tune.report({**result(None, -1, {"seconds/evaluator": inside}),
                         "rejected": str(exc) or "over budget", "stage_name": stage})
        except Exception as exc:
            traceback.print_exc()  # into the trial's log; Tune records the error
            if not isinstance(exc, LostWorkers):  # a lost worker: Tune retries the trial
                _store_error(failed, exc)
            raise


@contextlib.contextmanager
def trial_checkpoint(trial_dir: Path, saved: Path | None) -> Iterator[tune.Checkpoint | None]:
    """A ``tune.Checkpoint`` of the trial's state, or None without an epoch checkpoint.

    Holds the trial directory's files (``params.json``, ``metrics.json`` with the stages
    done, ``candidate.py``, ``spectrum.json``, ...; not ``trial.log`` nor the worker
    group's note) and under ``train/`` the epoch checkpoint ``saved`` with the run's
    ``metrics.json`` history.
    Built of hard links (copies across file systems) in a temporary folder of the trial
    directory, removed once Tune has copied it into the experiment's storage.
    """
    if saved is None or not Path(saved).is_file():
        yield None
        return
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint_", dir=trial_dir))
    try:
        for path in trial_dir.iterdir():
            if path.is_file() and path.name not in (TRIAL_LOG, WORKER_GROUP_FILE):
                _link(path, tmp / path.name)
        (tmp / "train").mkdir()
        train = trial_dir / "train"
        for name in (*TRAIN_FILES, Path(saved).name):
            if (train / name).is_file():
                _link(train / name, tmp / "train" / name)
        yield tune.Checkpoint.from_directory(str(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def restore_checkpoint(checkpoint: tune.Checkpoint, trial_dir: Path) -> int:
    """Rebuild ``trial_dir`` from a :func:`trial_checkpoint`; the stages it records as done.

    The trial's own files are replaced by the checkpoint's; the train dir keeps its logs,
    loses any other epoch checkpoint, and its ``last_checkpoint`` names the restored one,
    so ``train(resume="auto")`` continues from it.
    """
    trial_dir.mkdir(parents=True, exist_ok=True)
    for tmp in trial_dir.glob(".checkpoint_*"):  # left by a process killed while reporting
        shutil.rmtree(tmp, ignore_errors=True)
    train = trial_dir / "train"
    with checkpoint.as_directory() as folder:
        src = Path(folder)
        for path in src.iterdir():
            if path.is_file():
                shutil.copy2(path, trial_dir / path.name)
        (trial_dir / FAILED_FILE).unlink(missing_ok=True)
        saved = sorted((src / "train").glob("*.pth"))
        if saved:
            train.mkdir(exist_ok=True)
            for old in train.glob("*.pth"):
                old.unlink()
            for path in (src / "train").iterdir():
                shutil.copy2(path, train / path.name)
            (train / "last_checkpoint").write_text(str(train / saved[-1].name))
    params = _read_json(trial_dir / "params.json")
    return recorded_stages(trial_dir, params)[0] if isinstance(params, dict) else 0


def tune_trial_folder(trial_id: str) -> str:
    """Tune's own folder of a trial in the experiment's storage (parameters stay in
    params.json): ``trial_<id>``."""
    return f"trial_{trial_id}"


def newest_checkpoint(registered: tune.Checkpoint | None,
                      stored_in: Path | None) -> tune.Checkpoint | None:
    """Tune's checkpoint of the trial, or a further one Tune stored but never registered.

    A function trainable's report copies its checkpoint into the experiment's storage,
    but Tune's driver registers it only after one more call to the trial's actor (its
    ``save`` task): a node lost between the two leaves the checkpoint in ``stored_in``
    and Tune's retry without it (it would start the trial over). The trial's stored
    checkpoints (:func:`trial_checkpoint` folders) are ranked by the progress they
    record (stages done, then epoch), not by their index, which restarts after such a
    retry; one whose files are incomplete or damaged (copied while the node died) is
    skipped.
    """
    best, rank = registered, _progress(Path(registered.path)) if registered else None
    if stored_in is None or not stored_in.is_dir():
        return best
    for folder in stored_in.glob("checkpoint_*"):
        progress = _progress(folder)
        if progress is not None and (rank is None or progress > rank):
            best, rank = tune.Checkpoint.from_directory(str(folder)), progress
    return best


def _progress(folder: Path) -> tuple[int, int] | None:
    """(stages done, epoch) of a complete :func:`trial_checkpoint` folder, else None.

    The epoch is the checkpoint's own (mmengine's ``epoch_N.pth``/``iter_N.pth``): the
    run's ``metrics.json`` beside it is written after the checkpoint, so it lags.
    """
    import zipfile

    # No metrics.json yet: a checkpoint of the trial's first stage (none done).
    record = _read_json(folder / "metrics.json") if (folder / "metrics.json").exists() else {}
    weights = sorted((folder / "train").glob("*.pth")) if (folder / "train").is_dir() else []
    if not isinstance(record, dict) or len(weights) != 1:
        return None
    try:
        epoch = int(weights[0].stem.rsplit("_", 1)[-1])
        with zipfile.ZipFile(weights[0]) as archive:  # torch.save's format; CRCs checked
            if archive.testzip() is not None:
                return None
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    return int(record.get("stages_done", 0) or 0), epoch


def _train_on_workers(cfg: Any, stage: Stage, trial_dir: Path, *, scaling: WorkerScaling,
                      user_options: dict[str, Any]) -> dict[str, Any]:
    """A train stage on the trial's Ray Train workers (:mod:`nasdet.search.ray_train`)."""
    return train_stage(cfg, stage.name, trial_dir, scaling,
                       (user_options, stage.options.get("cfg_options")))


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _store_error(path: Path, exc: BaseException) -> None:
    """Keep what a trial raised (type name and message) for :func:`_stored_error`."""
    with contextlib.suppress(OSError, TypeError, ValueError):
        path.write_text(json.dumps({"type": type(exc).__name__, "message": str(exc)}))


def _stored_error(path: Path) -> BaseException:
    """The error :func:`_store_error` kept: a built-in type as it was, others as text."""
    record = _read_json(path)
    if not isinstance(record, dict):
        return RuntimeError(f"the trial raised in an earlier attempt (see {path})")
    name, message = str(record.get("type", "")), str(record.get("message", ""))
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        with contextlib.suppress(Exception):
            return cls(message)
    return RuntimeError(f"{name}: {message}")


def _finished_record(trial_dir: Path, params: dict[str, Any],
                     n_stages: int) -> dict[str, float] | None:
    """The metrics of a trial directory whose stages all finished for these params."""
    try:
        stored = json.loads((trial_dir / "params.json").read_text())
        record = json.loads((trial_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if stored != json.loads(json.dumps(params)) or record.get("stages_done") != n_stages:
        return None
    return {k: float(v) for k, v in record.get("metrics", {}).items()
            if isinstance(v, (int, float))}  # proxy_error/<name>: text


def make_trainable(spec: TrialSpec):
    """A Tune function trainable running :func:`run_trial` with ``spec``."""

    def nasdet_trial(params: dict[str, Any]) -> None:
        run_trial(spec, params)

    return nasdet_trial
