"""tools/derive_widths.py: a real spectrum report in, a derived config that trains out."""

from __future__ import annotations

import json

from nasdet.cli import run_tool
from tests.conftest import CONFIGS, load_tool, shrink_config
from tests.space.test_derive_widths import _analysis


def test_derive_widths_tool_end_to_end(tmp_path, tiny_det_root, capsys):
    from nasdet.report.spectrum_report import write_spectrum_json
    from nasdet.spectrum.analysis import analyze_checkpoints
    from nasdet.train import load_config, train

    cfg = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, tmp_path / "work")
    result = analyze_checkpoints(cfg, [None], layers=["backbone_stages"], num_images=2,
                                 progress=False)
    report = write_spectrum_json(result, tmp_path / "spectrum.json")
    config_file = tmp_path / "base.py"
    config_file.write_text(cfg.dump())
    tool = load_tool("derive_widths")
    out = tmp_path / "derived.py"
    assert run_tool(tool.main, [str(config_file), str(report), "--out", str(out),
                                "--divisor", "16", "--input-size", "64", "64"]) == 0
    text = capsys.readouterr().out
    assert "derived" in text and "ratio" in text
    derived = load_config(out, cfg_options={"train_cfg.max_epochs": 1})
    assert all(w % 16 == 0 for w in derived.model.backbone.widths)
    derived.work_dir = str(tmp_path / "train")
    assert "coco/bbox_mAP" in train(derived)


def test_tool_errors_name_the_option_and_write_nothing(tmp_path, capsys):
    tool = load_tool("derive_widths")
    report = tmp_path / "r.json"
    report.write_text(json.dumps(_analysis([16, 32, 64, 128], [1.0, 2.0, 3.0, 4.0])))
    base = str(CONFIGS / "tiny_faster_rcnn_synth.py")
    out = tmp_path / "x.py"
    assert run_tool(tool.main, [base, str(report), "--out", str(out)]) == 2
    assert "another architecture" in capsys.readouterr().err
    assert not out.exists()
    assert run_tool(tool.main, [base, str(report), "--out", str(tmp_path / "d.json")]) == 2
    assert "--out" in capsys.readouterr().err
