import subprocess
import sys
from pathlib import Path

import cv2

from tracker.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_default_run_writes_a_picture(tmp_path, capsys):
    image = tmp_path / "frames.png"
    assert main(["--max-frames", "2", "--image", str(image)]) == 0
    out = capsys.readouterr().out
    assert "synthetic" in out and "frame 1" in out
    assert cv2.imread(str(image)).shape[0] > 2 * 220


def test_help_explains_the_command():
    result = subprocess.run([sys.executable, str(ROOT / "run_tracker.py"), "--help"], capture_output=True, text=True, check=True)
    assert "--source" in result.stdout and "no camera" in result.stdout.lower()
