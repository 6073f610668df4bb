"""The machine record stored with every benchmark and training result."""

import subprocess
from pathlib import Path

from tracker.machine import machine_info

ROOT = Path(__file__).resolve().parent.parent


def test_the_commit_is_the_projects_whatever_the_working_directory(monkeypatch, tmp_path):
    expected = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    monkeypatch.chdir(tmp_path)  # a command started elsewhere, as the installed package allows
    info = machine_info()
    assert info["git_commit"] == expected
    assert info["logical_cores"] >= 1 and info["python"].count(".") == 2
