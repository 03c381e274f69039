"""nasdet as a library: shipped-file names, the commands, and the wheel used from anywhere.

The slow tests build the wheel from a copy of the source tree, install it (``--no-deps``)
into a scratch environment that borrows this environment's dependencies through a
``.pth`` line (so torch is not installed again), and run its commands from an empty
directory, where no ``configs/`` or ``search_spaces/`` exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from nasdet.cli import run_tool
from nasdet.errors import NasdetError
from nasdet.utils.resources import KINDS, data_root, given_or_shipped, resolve_path
from tests.conftest import REPO, load_tool

SHIPPED = ("configs", "search_spaces", "checkpoints")


def _project_scripts() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


# ------------------------------------------------------------------ fast: names, commands
def test_resolve_path_order(tmp_path, monkeypatch):
    root = data_root()
    shipped = root / "configs" / "tiny_faster_rcnn_synth.py"
    assert shipped.is_file()
    monkeypatch.chdir(tmp_path)
    rel = "configs/tiny_faster_rcnn_synth.py"
    # not here: the shipped file; nasdet:: names start in their kind's directory
    assert resolve_path(rel) == shipped
    assert resolve_path("nasdet::tiny_faster_rcnn_synth.py") == shipped
    assert resolve_path("nasdet::configs/tiny_faster_rcnn_synth.py") == shipped
    assert resolve_path("nasdet::tiny_synth.yaml", kind="search_spaces") == (
        root / "search_spaces" / "tiny_synth.yaml")
    assert resolve_path("nasdet::search/tiny_synth.yaml") == root / "configs/search/tiny_synth.yaml"
    # a file here wins over the shipped one; next to the naming file wins over both
    (tmp_path / "configs").mkdir()
    (tmp_path / rel).write_text("x = 1\n")
    assert resolve_path(rel) == Path(rel)
    assert given_or_shipped(rel) == rel
    beside = tmp_path / "search"
    (beside / "configs").mkdir(parents=True)
    (beside / rel).write_text("x = 2\n")
    assert resolve_path(rel, relative_to=beside) == beside / rel
    # absolute paths are kept; a name found nowhere comes back as the first place looked
    assert resolve_path(tmp_path / "none.py") == tmp_path / "none.py"
    assert resolve_path("none.py", relative_to=beside) == beside / "none.py"
    assert resolve_path("none.py") == Path("none.py")
    assert resolve_path("nasdet::none.py") == root / "configs" / "none.py"
    assert given_or_shipped("nasdet::none.py") == "nasdet::none.py"
    assert given_or_shipped("nasdet::tiny_synth.yaml", kind="search_spaces") == str(
        root / "search_spaces" / "tiny_synth.yaml")
    with pytest.raises(ValueError, match="kind must be one of"):
        resolve_path(rel, kind="weights")
    assert KINDS == SHIPPED


def test_shipped_names_load_from_any_directory(tmp_path, monkeypatch):
    from nasdet.search.config import load_search_config
    from nasdet.train import load_config

    monkeypatch.chdir(tmp_path)
    cfg = load_config("nasdet::tiny_faster_rcnn_synth.py", work_dir=tmp_path / "w")
    assert cfg.filename == str(data_root() / "configs" / "tiny_faster_rcnn_synth.py")
    (tmp_path / "s.yaml").write_text(
        "space: nasdet::tiny_synth.yaml\nobjectives: [{metric: macs, direction: minimize}]\n"
        "stages: [{type: complexity}]\n")
    search = load_search_config(tmp_path / "s.yaml")
    assert search.space_path == (data_root() / "search_spaces" / "tiny_synth.yaml").resolve()
    with pytest.raises(NasdetError, match="nonexistent.py: config file not found"):
        load_config("nasdet::nonexistent.py")


def test_every_tool_is_a_command():
    scripts = _project_scripts()
    wrappers = sorted(p.stem for p in (REPO / "tools").glob("*.py"))
    assert sorted(v.split(":")[0].rsplit(".", 1)[1] for v in scripts.values()) == wrappers
    for command, target in scripts.items():
        module_name, func = target.split(":")
        assert command.startswith("nasdet-") and func == "run"
        name = module_name.rsplit(".", 1)[1]
        module = __import__(module_name, fromlist=["main", "run"])
        # tools/<name>.py runs the package's main (the tests load the wrapper file)
        assert load_tool(name).main is module.main
        assert callable(module.run)
        lines = (REPO / "tools" / f"{name}.py").read_text().splitlines()
        assert len(lines) <= 15, f"tools/{name}.py is more than a thin wrapper"


# ------------------------------------------------------------------ slow: the wheel
def _source_files() -> list[str]:
    """What a fresh clone has (tracked, plus new files git does not ignore)."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                             capture_output=True, check=True).stdout.decode()
        return sorted(f for f in out.split("\0") if f and (REPO / f).is_file())
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        skip = {".git", ".venv", "build", "work_dirs", "data", "__pycache__"}
        return sorted(str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file()
                      and not skip & set(p.relative_to(REPO).parts)
                      and not any(part.endswith(".egg-info") for part in p.parts))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a copy of the source and installed into a scratch venv."""
    base = tmp_path_factory.mktemp("packaging")
    src, dist, venv, empty = (base / n for n in ("src", "dist", "venv", "empty"))
    files = _source_files()
    for rel in files:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    empty.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    times = {}
    start = time.perf_counter()
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", str(src),
                    "-w", str(dist)], check=True, cwd=base, env=_env())
    times["build_s"] = time.perf_counter() - start
    (wheel,) = dist.glob("nasdet-*.whl")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    # The dependencies: this environment's site-packages as plain path entries (their
    # .pth files, this checkout's editable install among them, are not processed).
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (purelib / "_nasdet_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index",
                    str(wheel)], check=True, cwd=base, env=_env())
    times["install_s"] = time.perf_counter() - start
    print(f"[packaging] wheel {wheel.stat().st_size / 1e6:.2f} MB; build "
          f"{times['build_s']:.1f} s, venv + install {times['install_s']:.1f} s")
    return SimpleNamespace(src=src, files=files, wheel=wheel, bin=venv / "bin", python=python,
                           purelib=purelib, empty=empty, times=times)


def _run(installed, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(installed.bin / args[0]), *args[1:]], cwd=cwd or installed.empty,
                          capture_output=True, text=True, env=_env(), timeout=600)


@pytest.mark.slow
def test_wheel_ships_configs_and_spaces_unchanged(installed):
    shipped = {f for f in installed.files if f.split("/", 1)[0] in SHIPPED
               and "__pycache__" not in f}
    assert any(f.startswith("configs/") for f in shipped)
    assert any(f.startswith("search_spaces/") for f in shipped)
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
        mim = {n[len("nasdet/.mim/"):] for n in names if n.startswith("nasdet/.mim/")}
        assert mim == shipped
        for rel in shipped:
            assert whl.read(f"nasdet/.mim/{rel}") == (REPO / rel).read_bytes(), rel
        # the commands' code is in the package; the checkout's wrappers and tests are not
        assert {f"nasdet/tools/{p.name}" for p in (REPO / "tools").glob("*.py")} <= names
        assert not any(n.startswith(("tools/", "tests/")) for n in names)
        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        text = whl.read(entry_points).decode()
    for command, target in _project_scripts().items():
        assert f"{command} = {target}" in text


@pytest.mark.slow
def test_installed_nasdet_is_the_wheel(installed):
    proc = subprocess.run(
        [str(installed.python), "-c",
         "import nasdet, nasdet.utils.resources as r; print(nasdet.__file__); print(r.data_root())"],
        cwd=installed.empty, capture_output=True, text=True, env=_env(), check=True)
    module, root = (Path(line) for line in proc.stdout.split())
    assert module == installed.purelib / "nasdet" / "__init__.py"
    assert root == installed.purelib / "nasdet" / ".mim"


@pytest.mark.slow
def test_every_command_answers_help(installed):
    for command in _project_scripts():
        proc = _run(installed, command, "--help")
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
        assert proc.stdout.startswith(f"usage: {command}"), (command, proc.stdout[:200])


@pytest.mark.slow
def test_one_trial_search_from_an_empty_directory(installed, tmp_path):
    """A search YAML naming the shipped space: its base trial's parameter count checks out."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    main = yaml.safe_load((REPO / "configs/search/tiny_synth.yaml").read_text())
    base = next(e for e in main["enqueue"] if e["name"] == "base")
    work = tmp_path / "run"
    work.mkdir()
    (work / "one.yaml").write_text(yaml.safe_dump({
        "space": "nasdet::tiny_synth.yaml", "n_trials": 1, "seed": 0,
        "sampler": {"type": "random"}, "enqueue": [base],
        "objectives": [{"metric": "macs", "direction": "minimize"}],
        "stages": [{"type": "complexity"}]}))
    start = time.perf_counter()
    proc = _run(installed, "nasdet-search", "one.yaml", "--work-dir", "w", cwd=work)
    installed.times["search_s"] = time.perf_counter() - start
    print(f"[packaging] one-trial search {installed.times['search_s']:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trial 0 complete" in proc.stdout
    summary = json.loads((work / "w/report/summary.json").read_text())
    assert summary["states"] == {"COMPLETE": 1}
    (row,) = summary["best"]
    assert row["enqueued_as"] == "base"
    candidate = work / "w/trials/0000/candidate.py"
    assert str(installed.purelib / "nasdet/.mim/search_spaces/tiny_synth.yaml") in (
        candidate.read_text())
    # the installed complexity stage's count == torch's count of the dumped config's model
    # (built here by mmdet's registry; ``parameters()`` yields a shared tensor once)
    register_all_modules()
    model = MODELS.build(Config.fromfile(str(candidate)).model)
    assert row["params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
def test_relative_and_shipped_names_match_the_checkout(installed, capsys):
    """``search_spaces/...`` absent here: the shipped space, sampled as the checkout's."""
    args = ["--num", "2", "--seed", "0", "--no-complexity"]
    proc = _run(installed, "nasdet-sample-space", "search_spaces/tiny_synth.yaml", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert run_tool(load_tool("sample_space").main,
                    [str(REPO / "search_spaces/tiny_synth.yaml"), *args]) == 0
    # Warnings name the checkpoint by its path, which differs (checkout vs package).
    def kept(text: str) -> list[str]:
        return [line for line in text.splitlines() if " - WARNING - " not in line]

    assert kept(proc.stdout) == kept(capsys.readouterr().out)
    assert kept(proc.stdout)[0].startswith("space tiny_synth: 2 candidates")
    missing = _run(installed, "nasdet-train", "nasdet::nonexistent.py")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: {installed.purelib / 'nasdet/.mim/configs/nonexistent.py'}: config file not found"]


_LOAD_SEARCH_CONFIGS = """
import json, sys
from pathlib import Path
from nasdet.errors import NasdetError
from nasdet.search.config import load_search_config
from nasdet.utils.resources import data_root

def norm(text):
    for root in (str(data_root()), str(Path.cwd())):
        text = text.replace(root, "<root>")
    return text

out = {}
for name in sys.argv[1:]:
    try:
        c = load_search_config("nasdet::search/" + name)
        pretrain = dict(c.pretrain or {})
        if "checkpoint" in pretrain:  # as the search uses it
            pretrain["checkpoint"] = str(Path(pretrain["checkpoint"]).absolute())
        out[name] = norm(json.dumps({"space": str(c.space_path), "n_trials": c.n_trials,
                                     "stages": [s.name for s in c.stages],
                                     "pretrain": pretrain}, sort_keys=True))
    except NasdetError as exc:
        out[name] = "error: " + norm(str(exc))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_shipped_search_configs_load_from_an_empty_directory_as_in_the_checkout(installed):
    """Spaces, pre-training sources and pinned checkpoints resolve inside the wheel."""
    names = sorted(p.name for p in (REPO / "configs/search").glob("*.yaml"))
    here = subprocess.run([sys.executable, "-c", _LOAD_SEARCH_CONFIGS, *names], cwd=REPO,
                          capture_output=True, text=True, env=_env(), check=True)
    there = subprocess.run([str(installed.python), "-c", _LOAD_SEARCH_CONFIGS, *names],
                           cwd=installed.empty, capture_output=True, text=True, env=_env(),
                           check=True)
    # The JSON is the last line (a checkpoint warning may be logged before it).
    checkout, wheel = (json.loads(p.stdout.strip().splitlines()[-1]) for p in (here, there))
    assert wheel == checkout
    assert any(not v.startswith("error: ") for v in wheel.values()), wheel
