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


def test_the_record_says_whether_tracked_files_differ_from_the_commit_and_what_ran_it():
    info = machine_info()
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)benchmarks/results"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    ).stdout
    assert info["git_uncommitted_changes"] is bool(status.strip())
    assert info["libraries"]["numpy"] == __import__("numpy").__version__
    assert info["load_average_1min"] is None or info["load_average_1min"] >= 0


def test_results_written_before_are_no_uncommitted_change_but_code_is(tmp_path, monkeypatch):
    import tracker.machine

    def git(*args, cwd=tmp_path / "tracker"):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()

    for folder in ("tracker", "benchmarks/results"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "tracker" / "a.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "speed.json").write_text("{}\n")
    git("init", "-q", cwd=tmp_path)
    git("add", ".", cwd=tmp_path)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start", cwd=tmp_path)
    monkeypatch.setattr(tracker.machine, "_git", lambda *args: git(*args))  # run from the package's folder, as it is
    assert machine_info()["git_uncommitted_changes"] is False
    (tmp_path / "benchmarks" / "results" / "speed.json").write_text('{"frames": 1}\n')  # an earlier benchmark's output
    assert machine_info()["git_uncommitted_changes"] is False
    (tmp_path / "tracker" / "a.py").write_text("x = 2\n")
    assert machine_info()["git_uncommitted_changes"] is True
