"""Shared fixtures: a very small synthetic dataset and the tiny detector configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def load_tool(name: str, folder: str = "tools"):
    """``<folder>/<name>.py`` as a module (tools and benchmarks are scripts, not packages)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shrink_config(name: str, data_root: Path, work_dir: Path, *, epochs: int = 1,
                  **overrides: Any):
    """A repo config made into a seconds-long CPU run on a 64-px dataset at ``data_root``."""
    from nasdet.data.roots import set_data_root
    from nasdet.train import load_config

    cfg = load_config(CONFIGS / name, work_dir=work_dir, cfg_options={
        "train_cfg.max_epochs": epochs,
        "train_cfg.val_interval": epochs,
        "train_dataloader.batch_size": 4,
        "val_dataloader.batch_size": 4,
        "default_hooks.logger.interval": 1,
        "default_hooks.checkpoint.save_best": None,
        "default_hooks.checkpoint.max_keep_ckpts": -1,
        "param_scheduler": [],
        "visualizer.vis_backends": [dict(type="LocalVisBackend")],
        **overrides,
    })
    set_data_root(cfg, data_root)
    cfg.pop("synthetic_data")
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        for step in cfg[loader].dataset.pipeline:
            if step.type == "Resize":
                step.scale = (64, 64)
    return cfg


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """The suite's models are small: one intra-op thread each.

    On a 2-core machine shared with anything else, two spinning OpenMP threads make
    every parallel region wait for a descheduled thread (measured 5-30x slower forwards).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_log_handler_on_a_closed_capture():
    """Point logging handlers left on an earlier test's closed capture at live stderr.

    mmengine's logger is created once and keeps the ``sys.stdout`` of that moment: under
    ``capsys`` a stream closed when that test ended ("Logging error" on the next warning).
    """
    import logging
    import sys

    from mmengine.logging import MMLogger

    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values(),
               *MMLogger._instance_dict.values()]  # mmengine's are not in logging's dict
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and getattr(
                    handler.stream, "closed", False):
                handler.stream = sys.stderr  # not setStream: it flushes the closed one
    yield


@pytest.fixture(scope="session")
def tiny_det_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 train / 8 val images of 64 px, 4 shape classes (generated once per session)."""
    from nasdet.data import ensure_dataset

    root = tmp_path_factory.mktemp("data") / "det"
    ensure_dataset("detection", root, num_classes=4, image_size=64, num_train=16,
                   num_val=8, scale_range=(12, 32), seed=0, progress=False)
    return root


@pytest.fixture()
def tiny_cfg(tiny_det_root: Path, tmp_path: Path):
    """``tiny_cfg(name, epochs, **cfg_options)``: a shrunk repo config in ``tmp_path``."""

    def load(name: str = "tiny_faster_rcnn_synth.py", epochs: int = 1, **overrides: Any):
        return shrink_config(name, tiny_det_root, tmp_path / "work", epochs=epochs, **overrides)

    return load


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """The tiny detectors' backbone, freshly initialised, saved as a backbone checkpoint."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import nasdet.models  # noqa: F401
    from nasdet.train import load_config

    register_all_modules(init_default_scope=True)
    torch.manual_seed(0)
    net = MODELS.build(load_config(CONFIGS / "tiny_faster_rcnn_synth.py").model.backbone)
    net.init_weights()
    path = tmp_path_factory.mktemp("ckpt") / "tiny_backbone.pth"
    torch.save({"state_dict": net.state_dict(), "meta": {}}, path)
    return path

