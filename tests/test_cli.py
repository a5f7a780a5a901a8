"""The `perception` command's policy: --version, logging options, one exit-code rule for every command
(0 ok, 1 failed check, 2 bad input, 130 interrupted), errors on stderr, and only the chosen command's
module imported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perception.cli import COMMANDS, LOG_FORMAT, main

ROOT = Path(__file__).resolve().parents[1]


def _perception(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perception.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, **kwargs)


def test_version_and_help():
    result = _perception("--version")
    assert result.returncode == 0 and result.stdout.startswith("perception ")
    result = _perception("--help")
    assert result.returncode == 0 and all(name in result.stdout for name in COMMANDS)


def test_help_and_run_import_no_torch():
    code = ("import sys\nfrom perception.cli import build_parser\nbuild_parser()\nbuild_parser('run')\n"
            "print(sorted(m for m in ('torch', 'replay') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize("argv", [["run", "--drive", "absent.mcap", "--quiet"],
                                  ["replay", "absent.mcap", "--out", "{tmp}/runs"],
                                  ["replay", "report", "absent.mcap", "--out", "{tmp}/r.html"]])
def test_bad_input_exits_2_with_the_message_on_stderr(argv, tmp_path, capsys):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    captured = capsys.readouterr()
    assert "absent.mcap" in captured.err and "error" in captured.err
    assert "Traceback" not in captured.err


def test_bad_arguments_exit_2():
    result = _perception("run", "--pacing", "warp")
    assert result.returncode == 2 and "invalid choice: 'warp'" in result.stderr and not result.stdout
    result = _perception("nosuch")
    assert result.returncode == 2 and "invalid choice: 'nosuch'" in result.stderr


def test_logging_is_configured_once_with_time_level_and_logger(tmp_path):
    code = ("import logging, sys\nfrom perception.cli import configure_logging\n"
            "configure_logging(None, 1)\nlogging.getLogger('perception.x').info('hello')\n"
            "logging.getLogger('perception.x').debug('hidden')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    line, = result.stderr.splitlines()
    assert " INFO perception.x: hello" in line and line[:4].isdigit()   # asctime first
    assert LOG_FORMAT.startswith("%(asctime)s")


def test_ctrl_c_exits_130(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "perception.cli", "echo", "--timeout", "60",
                                f"ipc://{tmp_path}/nobody"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(8)   # imports done (a loaded machine is slow), the subscriber is waiting for messages
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130 and "0 messages" in err
