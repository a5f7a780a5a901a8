"""The `perception` command's policy: --version, logging options, one exit-code rule for every command
(0 ok, 1 failed check, 2 bad input, 130 interrupted), errors on stderr, and only the chosen command's
module imported."""

from __future__ import annotations

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
    """Interrupted once it is printing (a real publisher on loopback, so the test knows it is running)."""
    import selectors

    from perception.messaging.publisher import Publisher
    from tests.test_replay_support import simulated_outputs, write_drive

    message = simulated_outputs(write_drive(tmp_path / "drive.mcap", frames=2))[0]
    endpoint = f"ipc://{tmp_path}/node"
    publisher = Publisher(endpoint)
    # SIGINT back to its default in the child: a test run started in the background (`cmd &`) inherits it
    # ignored, and Python then never raises KeyboardInterrupt (the echo hung on the Ctrl-C)
    process = subprocess.Popen([sys.executable, "-m", "perception.cli", "echo", "--timeout", "120", endpoint],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 120
        while not selector.select(timeout=0.2):   # publish until echo prints (it has to start and connect)
            assert time.monotonic() < deadline and process.poll() is None
            publisher.publish(message)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        publisher.close()
        if process.poll() is None:
            process.kill()
    # the exit-code policy (perception/cli.py): interrupted -> 130, no traceback, a closing line on stderr
    assert process.returncode == 130 and "Traceback" not in err and "perception echo:" in err and " messages" in err


def test_run_exits_2_naming_the_cameras_when_none_delivers(tmp_path):
    from calib.defaults import default_rig
    from calib.rig import save_rig

    save_rig(default_rig(2), tmp_path / "rig.yaml")
    (tmp_path / "node.yaml").write_text(
        "rig: rig.yaml\nsource: {kind: cameras, first_frame_timeout_s: 2, cameras: "
        f"{{front: {tmp_path}/absent_front.mp4, front_left: {tmp_path}/absent_left.mp4}}}}\n"
        f"publish: {{endpoint: 'ipc://{tmp_path}/node'}}\n")
    result = _perception("run", "--config", str(tmp_path / "node.yaml"), "--quiet")
    assert result.returncode == 2
    assert "perception run: error:" in result.stderr and "without a frame set" in result.stderr
    assert "front lost" in result.stderr and "front_left lost" in result.stderr
    assert "absent_front.mp4': OpenCV could not open it" in result.stderr
