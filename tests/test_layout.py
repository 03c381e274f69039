"""The package layout: the import contracts of pyproject.toml hold, and can be broken.

``lint-imports`` (import-linter) checks the one-way flow utils -> data -> models ->
spectrum -> transfer -> space -> proxies -> train -> hooks -> search -> benchmark/study
-> tools, reports as a leaf, and no import cycle between the modules of a package.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "nasdet"

#: Modules allowed over ~500 lines because each is one concept.
ONE_CONCEPT = {
    "space/space.py": "the search space and its candidates",
    "space/targets.py": "the registry of width targets (one entry per module family)",
    "space/schema.py": "the YAML schema of a space",
    "models/backbones/flex_resnet.py": "one backbone",
    "spectrum/covariance.py": "the streaming covariance",
    "report/search_report.py": "one report",
}
MAX_LINES = 500


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.is_file():
        pytest.fail(f"{exe} missing: install the dev extra (make install)")
    return subprocess.run([str(exe), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=300)


def test_import_contracts_hold():
    done = _lint_imports(REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "4 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("spectrum/measures.py", "import nasdet.search.config  # noqa", "Layers"),
    ("report/plotting.py", "import nasdet.train.runner  # noqa", "Reports are a leaf"),
    ("transfer/strategies.py", "import nasdet.transfer.apply  # noqa", "No import cycles"),
])
def test_a_violation_breaks_its_contract(tmp_path, module, line, contract):
    shutil.copytree(PACKAGE, tmp_path / "nasdet", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    target = tmp_path / "nasdet" / module
    target.write_text(target.read_text() + f"\n{line}\n")
    done = _lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout[-2000:]
    broken = done.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, broken


def test_modules_stay_small_unless_one_concept():
    long = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and rel not in ONE_CONCEPT:
            long[rel] = lines
    assert not long, f"modules over {MAX_LINES} lines: {long} (split them by job)"
