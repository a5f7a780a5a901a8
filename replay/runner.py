"""Replaying a drive through the real node (the same NodeProcess as `perception run`) into a run file.

    summary = replay_drive("drive.mcap", "run.mcap")          # lockstep: every frame, in order

Lockstep pacing makes the run a pure function of the drive, the model and the configuration: two
replays produce identical messages (replay.determinism checks it). `realtime` pacing replays at the
recorded rate instead, dropping what the node cannot keep up with, to study latency and drops.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tqdm import tqdm

from perception.engine.base import Engine
from perception.io.record import RunRecorder
from perception.node.config import NodeConfig
from perception.node.process import NodeProcess, RunSummary
from perception.node.sinks import RecorderSink


def replay_drive(drive_path: str | Path, out_path: str | Path, config: NodeConfig | None = None, *,
                 pacing: str = "lockstep", copy_inputs: bool = False, engine: Engine | None = None,
                 progress: bool = False) -> RunSummary:
    """Run the node on `drive_path` and record its outputs (detections, hints, health, image annotations)
    into `out_path`. `copy_inputs` also copies the drive's images into the run (one self-contained file).
    `progress`: a progress bar of frame sets on stderr."""
    config = config or NodeConfig()
    config = dataclasses.replace(
        config,
        source=dataclasses.replace(config.source, kind="drive", drive=str(drive_path), pacing=pacing, loop=False),
        publish=dataclasses.replace(config.publish, endpoint=None),  # the run file is the output: no socket
        record=None,
    )
    with NodeProcess(config, engine=engine) as process:
        process.attach(RecorderSink(RunRecorder(out_path, process.node.rig, drive_path=drive_path,
                                                copy_inputs=copy_inputs)))
        if not progress:
            return process.run()
        with tqdm(desc=Path(drive_path).name, unit=" frame sets") as bar:
            return process.run(status=lambda summary, outputs: bar.update(1))
