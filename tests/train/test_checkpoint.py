"""Safe loading of mmengine checkpoints under torch >= 2.6 (weights_only stays on)."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from mmengine.logging import MessageHub

from nasdet.errors import NasdetError
from nasdet.utils.checkpoint import (
    check_checkpoint_file,
    check_state_dict_fits,
    checkpoint_file_kind,
    load_checkpoint_file,
)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_loads_mmengine_style_checkpoint_with_weights_only(tmp_path):
    hub = MessageHub.get_instance("nasdet-test-ckpt")
    hub.update_scalar("train/loss", 0.5)
    path = tmp_path / "ckpt.pth"
    import numpy as np

    torch.save({"meta": {"seed": np.int64(3), "arr": np.arange(3.0)},
                "state_dict": {"w": torch.ones(2)},
                "message_hub": hub.state_dict()}, path)
    # torch's default refuses it: the reason for the allowlist (other tests may already
    # have registered it process-wide, so look with an empty allowlist)
    registered = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path, weights_only=True)
    finally:
        torch.serialization.add_safe_globals(registered)
    ckpt = load_checkpoint_file(path)
    assert ckpt["meta"]["seed"] == 3
    assert ckpt["message_hub"]["log_scalars"]["train/loss"].current() == 0.5


def test_refuses_arbitrary_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": _Evil()}, path)
    with pytest.raises(NasdetError, match="allowlist"):
        load_checkpoint_file(path)


def test_bare_state_dict_is_wrapped(tmp_path):
    path = tmp_path / "sd.pth"
    torch.save(torch.nn.Linear(2, 3).state_dict(), path)
    assert set(load_checkpoint_file(path)["state_dict"]) == {"weight", "bias"}


def test_state_dict_rules_for_load_from_and_resume():
    # 11 layers, 22 entries, 10x(16+4) + 12+3 = 215 elements.
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(10)],
                                torch.nn.Linear(4, 3))
    own = model.state_dict()
    # load_from: a new classifier (2 of 22 entries) is fine and reported.
    new_head = {**own, "10.weight": torch.zeros(7, 4), "10.bias": torch.zeros(7)}
    assert check_state_dict_fits(model, new_head, file="x.pth") == ["10.weight", "10.bias"]
    # load_from: many entries of other shapes -> another architecture.
    wider = {k: torch.zeros(8, *v.shape[1:]) if k < "3" else v for k, v in own.items()}
    with pytest.raises(NasdetError, match=r"x\.pth: 0\.weight: .*\(8, 4\).*\(4, 4\)"):
        check_state_dict_fits(model, wider, file="x.pth")
    # load_from: too little of the model covered.
    with pytest.raises(NasdetError, match="covers 44%"):  # (215 - 6 x 20) / 215
        check_state_dict_fits(model, {k: v for k, v in own.items() if k[0] not in "012345"
                                      or k.startswith("10.")}, file="x.pth")
    # resume: any difference is refused.
    with pytest.raises(NasdetError, match=r"10\.weight"):
        check_state_dict_fits(model, new_head, file="x.pth", strict=True)
    with pytest.raises(NasdetError, match="1/22 of the model's entries are missing"):
        check_state_dict_fits(model, {k: v for k, v in own.items() if k != "1.bias"},
                              file="x.pth", strict=True)
    assert check_state_dict_fits(
        model, {f"module.{k}": v for k, v in own.items()}, file="x.pth", strict=True) == []


@pytest.mark.parametrize(("content", "words"), [
    (b"epoch 1: loss 0.51\nepoch 2: loss 0.47\n", "not a torch checkpoint"),  # a log
    (b"", "not a torch checkpoint"),
    (pickle.dumps({"w": [1.0, 2.0]}, protocol=4), "not a torch checkpoint"),  # plain pickle
    (b"\x89PNG\r\n\x1a\n" + bytes(32), "not a torch checkpoint"),
])
def test_a_file_that_is_no_checkpoint_is_named_as_such(tmp_path, content, words):
    path = tmp_path / "ckpt.pth"
    path.write_bytes(content)
    with pytest.raises(NasdetError, match=words) as info:
        load_checkpoint_file(path)
    assert info.value.file == str(path)
    assert "allowlist" not in str(info.value)


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_checkpoint_is_unreadable_not_unsafe(tmp_path, legacy):
    whole = tmp_path / "whole.pth"
    torch.save({"state_dict": {"w": torch.arange(4096.0)}}, whole,
               _use_new_zipfile_serialization=not legacy)
    assert checkpoint_file_kind(whole) == ("legacy" if legacy else "zip")
    assert torch.equal(load_checkpoint_file(whole)["state_dict"]["w"], torch.arange(4096.0))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(NasdetError, match="not a readable torch checkpoint") as info:
        load_checkpoint_file(cut)
    assert info.value.file == str(cut) and "allowlist" not in str(info.value)


def test_check_checkpoint_file_names_the_option(tmp_path):
    with pytest.raises(NasdetError, match="is a directory") as info:
        check_checkpoint_file(tmp_path, key="--resume")
    assert info.value.key == "--resume"
    with pytest.raises(NasdetError, match="checkpoint file not found"):
        check_checkpoint_file(tmp_path / "absent.pth", key="CKPT")
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {}}, good)
    assert check_checkpoint_file(good) == good
