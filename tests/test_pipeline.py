"""The pipelined node loop: the same messages as the sequential loop on a recorded drive in lockstep (every
field bit for bit but the wall-time ones), engine failures, stop() mid-run, and clean shutdown when a stage
raises (real threads, the real node with the bundled model through ONNX Runtime, real run files)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from perception.engine.onnxruntime import OnnxRuntimeEngine
from perception.io.record import RunRecorder
from perception.io.run_file import load_run
from perception.node.config import config_from_dict
from perception.node.defaults import DEMO_MODEL
from perception.node.pipeline import pipelined, sequential
from perception.node.process import NodeProcess
from perception.node.sinks import RecorderSink, Sink
from replay.determinism import assert_runs_identical
from replay.synth import cached_drive

STAGE_THREADS = {"node-prepare", "node-engine"}


@pytest.fixture(scope="module")
def drive() -> Path:
    """3 cameras with lost frames and capture jitter: stale cameras and drop counters move, and frames join
    their frame set after its time (a track born from one once got a negative age_s, which the run reader
    refuses)."""
    return cached_drive(seed=17, seconds=3.0, fps=10.0, num_cameras=3, scenario="cut_in", width=480,
                        height=270, drop_prob=0.15, jitter_ms=4.0)


def _config(drive: Path, pipeline: bool):
    return config_from_dict({
        "source": {"drive": str(drive), "pacing": "lockstep"}, "engine": {"threads": 1},
        "publish": {"endpoint": None}, "health": {"rate_hz": 100.0}, "pipeline": pipeline}, "test.yaml")


def _record(drive: Path, out: Path, pipeline: bool, *, engine=None, stop_after: int | None = None,
            max_frame_sets: int | None = None, sinks: tuple[Sink, ...] = ()):
    """Run the node on `drive` into the run file `out`; returns (summary, names of the threads seen)."""
    threads: set[str] = set()
    with NodeProcess(_config(drive, pipeline), engine=engine) as process:
        process.attach(RecorderSink(RunRecorder(out, process.node.rig, drive_path=drive)))
        for sink in sinks:
            process.attach(sink)

        def status(summary, _outputs) -> None:
            threads.update(t.name for t in threading.enumerate())
            if stop_after is not None and summary.frame_sets == stop_after:
                process.stop()

        summary = process.run(max_frame_sets=max_frame_sets, status=status)
    return summary, threads


def _node_threads() -> set[str]:
    return {t.name for t in threading.enumerate()} & STAGE_THREADS


def test_lockstep_outputs_are_bit_identical_to_the_sequential_loop(drive, tmp_path):
    seq, seq_threads = _record(drive, tmp_path / "sequential.mcap", pipeline=False)
    pipe, pipe_threads = _record(drive, tmp_path / "pipelined.mcap", pipeline=True)
    assert not seq_threads & STAGE_THREADS and STAGE_THREADS <= pipe_threads  # each loop ran as configured
    assert_runs_identical(tmp_path / "sequential.mcap", tmp_path / "pipelined.mcap")
    assert (pipe.frame_sets, pipe.objects, pipe.dropped, pipe.bad_frames) == \
        (seq.frame_sets, seq.objects, seq.dropped, seq.bad_frames)
    run = load_run(tmp_path / "pipelined.mcap")
    detections = [m.message for m in run.topic("detections")]
    assert len(detections) == seq.frame_sets == 25 and seq.objects > 100  # not a vacuous comparison
    assert any(m.stale.any() for m in detections) and seq.dropped > 0  # lost frames: stale cameras, drops
    assert len(run.topic("health")) == 25 and _node_threads() == set()


class _FailingEngine(OnnxRuntimeEngine):
    """The real engine, refusing the frame sets whose numbers are in `fail_at` (0-based calls)."""

    def __init__(self, fail_at: set[int]) -> None:
        super().__init__(DEMO_MODEL, threads=1)
        self.fail_at = fail_at
        self.calls = 0

    def run(self, *args, **kwargs):
        call, self.calls = self.calls, self.calls + 1
        if call in self.fail_at:
            raise RuntimeError(f"injected failure on call {call}")
        return super().run(*args, **kwargs)


def test_an_engine_failure_is_reported_the_same_way_by_both_loops(drive, tmp_path):
    for name, pipeline in (("sequential.mcap", False), ("pipelined.mcap", True)):
        summary, _ = _record(drive, tmp_path / name, pipeline, engine=_FailingEngine({6, 7}))
        assert summary.frame_sets == 25  # the loop went on
    assert_runs_identical(tmp_path / "sequential.mcap", tmp_path / "pipelined.mcap")
    health = [m.message for m in load_run(tmp_path / "pipelined.mcap").topic("health")]
    assert [h.state == "fault" and "engine error" in h.reasons for h in health[5:9]] == [False, True, True, False]


def test_stop_mid_run_publishes_a_prefix_of_the_run_and_joins_the_threads(drive, tmp_path):
    summary, threads = _record(drive, tmp_path / "stopped.mcap", pipeline=True, stop_after=5)
    assert STAGE_THREADS <= threads and _node_threads() == set()
    # the frame sets already accepted when stop() came are finished: at most three in flight (a finished
    # one queued for the caller, one taken by the engine stage, one prepared and queued for it)
    assert 5 <= summary.frame_sets <= 8
    _record(drive, tmp_path / "prefix.mcap", pipeline=False, max_frame_sets=summary.frame_sets)
    assert_runs_identical(tmp_path / "prefix.mcap", tmp_path / "stopped.mcap")


def test_max_frame_sets_ends_the_pipelined_loop(drive, tmp_path):
    summary, _ = _record(drive, tmp_path / "short.mcap", pipeline=True, max_frame_sets=4)
    assert summary.frame_sets == 4 and len(load_run(tmp_path / "short.mcap").topic("detections")) == 4
    assert _node_threads() == set()


class _BrokenSink(Sink):
    name = "broken"

    def __init__(self, after: int) -> None:
        self.after = after
        self.written = 0

    def write(self, outputs) -> None:
        if self.written == self.after:
            raise OSError("disk full (injected)")
        self.written += 1


def test_a_failing_sink_ends_the_pipelined_loop_with_its_error(drive, tmp_path):
    with pytest.raises(OSError, match="disk full"):
        _record(drive, tmp_path / "broken.mcap", pipeline=True, sinks=(_BrokenSink(after=3),))
    assert _node_threads() == set()


# ---- the runner on its own ---------------------------------------------------------------------------
def _stages(fail_stage: str | None = None, fail_at: int = -1):
    def stage(name: str, add: int):
        def run(x: int) -> int:
            if name == fail_stage and (x % 10_000) // 100 == fail_at:
                raise ValueError(f"bad item {x}")
            return x + add
        return (name, run)
    return [stage("prepare", 10_000), stage("engine", 100_000)]


def test_pipelined_gives_the_sequential_results_in_order():
    items = [i * 100 for i in range(50)]
    assert list(pipelined(iter(items), _stages())) == list(sequential(items, _stages()))
    assert _node_threads() == set()


@pytest.mark.parametrize("stage, at", [("prepare", 0), ("prepare", 7), ("engine", 0), ("engine", 7)])
def test_a_stage_exception_is_raised_in_the_caller_with_its_stage(stage, at):
    got = []
    with pytest.raises(ValueError, match="bad item") as raised:
        for result in pipelined((i * 100 for i in range(50)), _stages(stage, at)):
            got.append(result)
    assert f"raised in the {stage!r} stage of the pipelined node loop" in raised.value.__notes__
    assert got == [i * 100 + 110_000 for i in range(len(got))] and len(got) <= at
    assert _node_threads() == set()


def test_a_stage_exception_while_the_source_blocks_closes_the_source():
    """The engine stage fails on the first item while the first stage's thread is blocked in the source (a
    camera read): the error reaches the caller once that read returns, and the source's generator is closed
    in the thread that iterated it."""
    closed = threading.Event()

    def blocking_source():
        try:
            yield 0
            threading.Event().wait(0.3)
            yield 100
            yield 200
        finally:
            closed.set()

    with pytest.raises(ValueError, match="bad item 10000"):
        list(pipelined(blocking_source(), _stages("engine", 0)))
    assert closed.is_set() and _node_threads() == set()


def test_the_caller_breaking_off_joins_the_threads():
    def endless():
        i = 0
        while True:
            yield i
            i += 100

    results = pipelined(endless(), _stages())
    assert [next(results) for _ in range(3)] == [110_000, 110_100, 110_200]
    results.close()
    assert _node_threads() == set()
