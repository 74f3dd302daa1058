"""scripts/fork_floor.py runs with the standard library alone and reports every figure it names."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fork_floor.py"


def test_fork_floor_reports_each_figure_as_a_positive_cost():
    done = subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), "--json", "--forks", "20"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert set(figures) == {
        "page_fault_zero_fill_us",
        "page_fault_copy_on_write_us",
        "bare_fork_exit_ms",
        "bare_fork_trivial_ms",
        "zygote_fork_exit_ms",
        "zygote_fork_trivial_ms",
    }
    assert all(value > 0 for value in figures.values()), figures


def test_fork_floor_serves_batches_on_demand():
    """--serve N: one line in, N forks of the warm zygote running the trivial program, "done" out."""
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(SCRIPT), "--serve", "5"], input="go\ngo\n", capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ready", "done", "done"]
