"""Cutting search hits into short MCAP clips that are regression cases on their own.

Each clip is a run file with copied inputs: the drive's images, ground truth and ego speed from `pad_s`
before the hit to `pad_s` after it, plus the node's outputs from replaying exactly that cut (the node starts
fresh at the clip's first frame, so these outputs, not the long drive's, are what a replay of the clip must
reproduce). `perception replay CLIP` takes it as a drive, and the pytest plugin as drive and golden at once:
`replay_regression(clip, golden=clip)`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perception.errors import ConfigError
from replay.index.search import Hit
from replay.index.store import connect


def cut_drive(drive_path: str | Path, out: str | Path, start_ns: int, end_ns: int) -> int:
    """Writes the frames, labels and ego states with start_ns <= t <= end_ns to a new drive; frames written."""
    from perception.io.drive import DriveReader, DriveWriter, open_drive

    source = open_drive(drive_path)
    written = 0
    try:
        with DriveWriter(out, source.rig, jpeg_quality=92) as writer:
            for cf in source.frames(start_ns=start_ns, end_ns=end_ns + 1):
                writer.write_frame(cf.camera, cf.t_ns, cf.frame)
                written += 1
            if isinstance(source, DriveReader):
                for gt in source.ground_truth():
                    if start_ns <= gt.t_ns <= end_ns:
                        writer.write_ground_truth(gt)
                for ego in source.ego():
                    if start_ns <= ego.t_ns <= end_ns:
                        writer.write_ego(ego.t_ns, ego.speed)
    finally:
        source.close()
    return written


def export_clips(db: str | Path, hits: Sequence[Hit], out_dir: str | Path, *, pad_s: float = 1.0,
                 config: Any = None) -> list[Path]:
    from replay.runner import replay_drive

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    con = connect(db, read_only=True)
    try:
        paths = dict(con.execute("SELECT drive, drive_path FROM drives").fetchall())
    finally:
        con.close()
    clips = []
    pad = int(pad_s * 1e9)
    for hit in hits:
        drive_path = paths.get(hit.drive)
        if not drive_path or not Path(drive_path).exists():
            raise ConfigError(f"--export: the drive of {hit.drive!r} ({drive_path or 'unknown'}) is not available")
        clip = out_dir / f"{hit.drive}_{hit.start_s:08.2f}s.mcap"
        with tempfile.TemporaryDirectory(prefix="perception-clip-") as tmp:
            cut = Path(tmp) / f"{hit.drive}.mcap"
            if not cut_drive(drive_path, cut, hit.start_ns - pad, hit.end_ns + pad):
                raise ConfigError(f"--export: no frames of {hit.drive} between {hit.start_s - pad_s:.2f} and "
                                  f"{hit.end_s + pad_s:.2f} s")
            replay_drive(cut, clip, config, copy_inputs=True)
        clips.append(clip)
    return clips
