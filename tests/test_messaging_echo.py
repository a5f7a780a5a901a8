"""`perception echo` against a real publisher on loopback, as a separate process."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from perception.messaging import Publisher
from perception.messaging.curve import CurveServerKeys
from tests.test_messaging_codec import sample_detections, sample_health, sample_hints

ROOT = Path(__file__).resolve().parents[1]


class Publishing:
    """Publishes detections, hints and health every 20 ms from a thread until stopped."""

    def __init__(self, endpoint: str, **kwargs):
        self.publisher = Publisher(endpoint, **kwargs)
        self.endpoint = self.publisher.endpoint
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.02):
            for message in (sample_detections(3), sample_hints(), sample_health()):
                self.publisher.publish(message)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.publisher.close()


def echo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perception.cli", "echo", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_echo_prints_messages_readably(tmp_path):
    with Publishing(f"ipc://{tmp_path}/node.sock") as pub:
        result = echo("--count", "6", "--timeout", "20", pub.endpoint)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for header in ("detections seq=", "hints seq=", "health seq="):
        assert header in out
    assert "model=demo-v1" in out and "right (capture_ns -1, dropped 7, STALE)" in out
    assert "stages ms: sync 0.12 preprocess 2.50 engine 21.00" in out
    assert "brake=prepare" in out and "lead: id 101 gap 23.5 m rel_speed -3.25 m/s ttc 7.2 s" in out
    assert "state=degraded reasons: camera right lost" in out and "latency p50 31.5 ms p99 44.0 ms" in out
    # one table row per object, classes and cameras by name, arrays compact
    rows = [line for line in out.splitlines() if line.strip().startswith(("100 ", "101 ", "102 "))]
    assert len(rows) >= 3 and any(name in rows[0] for name in ("car", "truck", "pedestrian", "cyclist"))
    assert "inf" in rows[0]  # object 100 is not closing: TTC inf
    assert "perception echo: 6 messages" in result.stderr


def test_echo_topic_filter(tmp_path):
    with Publishing(f"ipc://{tmp_path}/node.sock") as pub:
        result = echo("--topic", "health", "--count", "2", "--timeout", "20", pub.endpoint)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("health seq=") == 2 and "detections" not in result.stdout


def test_echo_times_out_without_publisher(tmp_path):
    result = echo("--timeout", "0.3", f"ipc://{tmp_path}/nobody.sock")
    assert result.returncode == 1 and "no message for 0.3 s" in result.stderr


def test_echo_curve_and_bad_arguments(tmp_path):
    from perception.messaging import create_keys
    server_public, server_secret = create_keys(tmp_path / "keys", "node")
    client_public, client_secret = create_keys(tmp_path / "keys", "echo")
    clients = tmp_path / "clients"
    clients.mkdir()
    (clients / "echo.key").write_bytes(client_public.read_bytes())
    with Publishing("tcp://127.0.0.1:*", curve=CurveServerKeys(server_secret, clients)) as pub:
        result = echo("--topic", "hints", "--count", "1", "--timeout", "20", "--curve-secret", str(client_secret),
                      "--curve-server-key", str(server_public), pub.endpoint)
    assert result.returncode == 0 and "hints seq=" in result.stdout, result.stderr
    result = echo("--curve-secret", str(client_secret), "tcp://127.0.0.1:1")
    assert result.returncode == 2 and "--curve-secret and --curve-server-key go together" in result.stderr
