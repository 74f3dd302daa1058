"""The house rules CI holds the code to: ruff's lint and its formatter (pyproject.toml, [tool.ruff]) find
nothing to change."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


FOLDERS = ["ledex_rl", "actors", "sandbox", "scripts", "tests"]


@pytest.fixture(scope="module")
def ruff() -> str:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (pip install -e .[test])")
    return found


def test_ruff_finds_nothing(ruff):
    done = subprocess.run([ruff, "check", *FOLDERS], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]


def test_the_code_is_formatted(ruff):
    done = subprocess.run([ruff, "format", "--check", *FOLDERS], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"run `.venv/bin/ruff format {' '.join(FOLDERS)}`:\n" + done.stdout[-3000:]
