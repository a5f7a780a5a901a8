"""What the writers of our MCAP files share (drives: drive.py, runs: record.py): the camera names checked
as topic parts, the file created with the rig attached first, closing (also on leaving a `with` block)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter

from calib.rig import Rig, rig_to_yaml_str
from perception.errors import DriveError

RIG_ATTACHMENT = "rig.yaml"
MAX_LOG_TIME_NS = 2**64 - 1  # MCAP log times are unsigned 64-bit


class McapFileWriter:
    """Creates `path` (an existing file is replaced) and writes the rig attachment first; a failure there
    closes and removes the file. `what` names the writer in the file's header and in errors ("drive writer")."""

    def __init__(self, path: str | Path, rig: Rig, *, what: str, chunk_size: int) -> None:
        for name in rig:
            if not re.fullmatch(r"[A-Za-z0-9_]+", name):
                raise DriveError(f"{path}: camera name {name!r} cannot be part of a topic name (use A-Z a-z 0-9 _)")
        self.path = Path(path)
        self.rig = rig
        self._what = what
        self._closed = False
        try:
            self._file = open(self.path, "wb")
        except OSError as e:
            raise DriveError(f"{self.path}: cannot create: {e.strerror}") from None
        with self._closing_on_error():
            self._mcap = McapWriter(self._file, chunk_size=chunk_size, compression=CompressionType.ZSTD)
            self._mcap.start(library=f"perception {what}")
            self._mcap.add_attachment(0, 0, RIG_ATTACHMENT, "application/yaml", rig_to_yaml_str(rig).encode())
            # on disk now: a process killed from here on leaves a file cut after whole records, which the
            # readers read to the cut (a kill before this flush used to leave a file without its magic bytes)
            self._file.flush()

    def close(self) -> None:
        """Writes the index; the file is complete. Also called on leaving the `with` block."""
        if not self._closed:
            self._closed = True
            try:
                self._mcap.finish()
            finally:
                self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DriveError(f"{self.path}: the {self._what} is closed")

    @contextmanager
    def _closing_on_error(self) -> Iterator[None]:
        """Around the first writes: a file that fails to start (an error, an interruption) is removed."""
        try:
            yield
        except BaseException:
            self._file.close()
            self.path.unlink(missing_ok=True)
            raise
