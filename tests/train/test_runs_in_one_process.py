"""Several runs in one process (search trials, benchmark jobs) keep to their own dirs."""

from __future__ import annotations

import shutil

from nasdet.train import train
from tests.conftest import shrink_config


def test_a_second_run_writes_its_own_scalars(tiny_det_root, tmp_path):
    first = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, tmp_path / "a",
                          **{"train_dataloader.dataset.indices": 4})
    train(first)
    shutil.rmtree(tmp_path / "a")  # a finished trial's dir may go (it did: the next run failed)
    second = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, tmp_path / "b",
                           **{"train_dataloader.dataset.indices": 4})
    train(second)
    scalars = list((tmp_path / "b").glob("*/vis_data/scalars.json"))
    assert len(scalars) == 1 and scalars[0].read_text().strip()
    assert not (tmp_path / "a").exists()
