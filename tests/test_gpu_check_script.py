"""tools/gpu_check.sh (runs on a GPU machine only): its syntax and argument handling, checked here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


@pytest.mark.parametrize("args, message", [(["--bogus"], "unknown argument --bogus"),
                                           (["--out"], "--out needs a directory")])
def test_bad_arguments_exit_2_with_a_message(args, message):
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr


def test_help_describes_the_steps():
    result = run("--help")
    assert result.returncode == 0 and "pytest -m gpu" in result.stdout and "preprocess: cuda" in result.stdout


def test_without_a_gpu_it_stops_before_any_step(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the script would run for minutes")
    result = run("--quick", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "needs torch with CUDA and CuPy" in result.stderr
    assert not list((tmp_path / "out").iterdir())  # no step ran
