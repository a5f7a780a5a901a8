"""Opening MCAP files for reading: the index from the summary section, or rebuilt from the data when the
file was cut (a recorder killed mid-drive) — then every complete chunk before the cut is read and a
warning says where the file ends.

Shared by our drives (replay/drive.py) and ROS 2 bags (replay/ros2bag.py).
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import zstandard
from mcap.data_stream import ReadDataStream
from mcap.decoder import DecoderFactory
from mcap.exceptions import McapError
from mcap.opcode import Opcode
from mcap.reader import SeekingReader
from mcap.records import Attachment, AttachmentIndex, Channel, Chunk, ChunkIndex, Message, Schema
from mcap.stream_reader import MAGIC_SIZE, breakup_chunk
from mcap.summary import Summary

from calib.rig import Rig, rig_from_yaml_str
from perception.errors import DriveError

MCAP_MAGIC = b"\x89MCAP0\r\n"
RECORD_SIZE_LIMIT = 512 * 2**20  # one chunk or attachment; a raw 40 MP NV12 image is 60 MB
# What reading a damaged record can raise (short reads, CRC, zstd, struct, bad UTF-8, unknown ids).
_CORRUPT = (McapError, ValueError, struct.error, zstandard.ZstdError, KeyError)


class TruncatedDriveWarning(UserWarning):
    """The drive file ends early; it is read up to the last complete chunk."""


class McapFile:
    """An open MCAP file: its summary (read or rebuilt), channels by topic, messages in log-time order."""

    def __init__(self, path: str | Path, decoder_factories: Iterable[DecoderFactory] = ()):
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb")
        except OSError as e:
            raise DriveError(f"{self.path}: cannot open: {e.strerror}") from None
        try:
            if self._file.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
                raise DriveError(f"{self.path}: not an MCAP file (bad magic bytes)")
            self.summary = self._read_summary()
            for chunk in self.summary.chunk_indexes:
                if max(chunk.chunk_length, chunk.uncompressed_size) > RECORD_SIZE_LIMIT:
                    raise DriveError(f"{self.path}: chunk at byte {chunk.chunk_start_offset} is larger than "
                                     f"{RECORD_SIZE_LIMIT} bytes")
            self._file.seek(0)
            self._reader = _Reader(self._file, self.summary, decoder_factories)
        except BaseException:
            self._file.close()
            raise
        self.channels = {c.topic: c for c in self.summary.channels.values()}
        self._factories = tuple(decoder_factories)
        self._decoders: dict[int, Callable[[bytes], Any]] = {}

    def close(self) -> None:
        self._file.close()

    @property
    def time_range(self) -> tuple[int, int] | None:
        """(first, last) message log time in ns, None for a file without messages."""
        stats, chunks = self.summary.statistics, self.summary.chunk_indexes
        if stats is not None:
            return (stats.message_start_time, stats.message_end_time) if stats.message_count else None
        if not chunks:
            return None
        return min(c.message_start_time for c in chunks), max(c.message_end_time for c in chunks)

    def schema(self, channel: Channel) -> Schema | None:
        return self.summary.schemas.get(channel.schema_id)

    def attachments(self) -> Iterator[Attachment]:
        try:
            yield from self._reader.iter_attachments()
        except _CORRUPT as e:
            raise DriveError(f"{self.path}: corrupt attachment: {e}") from None

    def messages(self, topics: Iterable[str], start_ns: int | None = None,
                 end_ns: int | None = None) -> Iterator[tuple[Channel, Message, Any]]:
        """(channel, message, decoded) of `topics` with start_ns <= log time < end_ns, in log-time order."""
        topics = [t for t in topics if t in self.channels]
        if not topics:
            return
        iterator = self._reader.iter_messages(topics, log_time_order=True, starting_at=start_ns,
                                              ending_before=end_ns)
        while True:
            try:
                item = next(iterator, None)
            except _CORRUPT as e:
                raise DriveError(f"{self.path}: corrupt chunk: {e}") from None
            if item is None:
                return
            _, channel, message = item
            yield channel, message, self._decode(channel, message)

    def where(self, channel: Channel, message: Message) -> str:
        return f"{self.path}: {channel.topic} @ log time {message.log_time}"

    def _decode(self, channel: Channel, message: Message) -> Any:
        decoder = self._decoders.get(channel.id)
        if decoder is None:
            schema = self.schema(channel)
            for factory in self._factories:
                try:
                    decoder = factory.decoder_for(channel.message_encoding, schema)
                except _CORRUPT as e:
                    raise DriveError(f"{self.path}: {channel.topic}: unreadable schema: {e}") from None
                if decoder is not None:
                    break
            else:
                raise DriveError(f"{self.path}: {channel.topic}: no decoder for message encoding "
                                 f"{channel.message_encoding!r} with schema {schema.name if schema else None!r}")
            self._decoders[channel.id] = decoder
        try:
            return decoder(message.data)
        except Exception as e:  # noqa: BLE001 - protobuf / CDR / JSON decoders raise their own types
            raise DriveError(f"{self.where(channel, message)}: cannot decode message: {e}") from None

    def _read_summary(self) -> Summary:
        summary = None
        self._file.seek(-len(MCAP_MAGIC), io.SEEK_END)
        if self._file.read() == MCAP_MAGIC:  # else the file was cut: the footer is not there to trust
            self._file.seek(0)
            try:
                summary = SeekingReader(self._file, record_size_limit=RECORD_SIZE_LIMIT).get_summary()
            except (*_CORRUPT, OSError):
                summary = None
        if summary is not None:
            return summary
        summary, end, complete = _scan(self._file, self.path)
        if not complete:
            warnings.warn(f"{self.path}: file is truncated or damaged at byte {end}; read "
                          f"{len(summary.chunk_indexes)} complete chunks before it", TruncatedDriveWarning,
                          stacklevel=4)
        return summary


class _Reader(SeekingReader):
    """The library's seeking reader, on a summary that may have been rebuilt by `_scan`."""

    def __init__(self, stream: io.BufferedReader, summary: Summary, factories: Iterable[DecoderFactory]):
        super().__init__(stream, validate_crcs=True, decoder_factories=factories,
                         record_size_limit=RECORD_SIZE_LIMIT)
        self._rebuilt = summary

    def get_summary(self) -> Summary:
        return self._rebuilt


def _scan(f: io.BufferedReader, path: Path) -> tuple[Summary, int, bool]:
    """Index the data section record by record: (summary, where reading stopped, reached the data end)."""
    summary = Summary()
    offset = MAGIC_SIZE
    f.seek(offset)
    while True:
        head = f.read(9)
        if len(head) < 9:
            return summary, offset, False
        opcode, length = struct.unpack("<BQ", head)
        if length > RECORD_SIZE_LIMIT:
            return summary, offset, False
        body = f.read(length)
        if len(body) < length:
            return summary, offset, False
        if opcode in (Opcode.DATA_END, Opcode.FOOTER):
            return summary, offset, True
        if opcode == Opcode.MESSAGE:
            raise DriveError(f"{path}: has no readable index and messages outside chunks; cannot index it")
        try:
            _index_record(summary, opcode, body, offset)
        except _CORRUPT:
            return summary, offset, False
        offset += 9 + length


def _index_record(summary: Summary, opcode: int, body: bytes, offset: int) -> None:
    stream = ReadDataStream(io.BytesIO(body))
    if opcode == Opcode.CHUNK:
        chunk = Chunk.read(stream)
        if chunk.uncompressed_size > RECORD_SIZE_LIMIT:
            raise McapError(f"chunk claims {chunk.uncompressed_size} bytes uncompressed")
        records = breakup_chunk(chunk, validate_crc=True)
        if any(isinstance(r, Message) for r in records):
            summary.chunk_indexes.append(ChunkIndex(
                message_start_time=chunk.message_start_time, message_end_time=chunk.message_end_time,
                chunk_start_offset=offset, chunk_length=9 + len(body), message_index_offsets={},
                message_index_length=0, compression=chunk.compression, compressed_size=len(chunk.data),
                uncompressed_size=chunk.uncompressed_size))
    elif opcode == Opcode.ATTACHMENT:
        a = Attachment.read(stream)
        summary.attachment_indexes.append(AttachmentIndex(
            offset=offset, length=9 + len(body), create_time=a.create_time, log_time=a.log_time,
            data_size=len(a.data), name=a.name, media_type=a.media_type))
        records = []
    elif opcode in (Opcode.SCHEMA, Opcode.CHANNEL):
        records = [(Schema if opcode == Opcode.SCHEMA else Channel).read(stream)]
    else:
        records = []
    for record in records:
        if isinstance(record, Schema):
            summary.schemas[record.id] = record
        elif isinstance(record, Channel):
            summary.channels[record.id] = record


class McapReader:
    """What every reader wrapping one McapFile in `self._mcap` shares (drives, ROS 2 bags, run files):
    the path, the camera names of `self.rig`, the log-time range, closing."""

    _mcap: McapFile
    rig: Rig

    @property
    def path(self) -> Path:
        return self._mcap.path

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.rig.names

    @property
    def start_ns(self) -> int | None:
        """Log time of the first message (any topic); None for an empty file."""
        time_range = self._mcap.time_range
        return None if time_range is None else time_range[0]

    @property
    def end_ns(self) -> int | None:
        """Log time of the last message (any topic); None for an empty file."""
        time_range = self._mcap.time_range
        return None if time_range is None else time_range[1]

    @property
    def duration_ns(self) -> int:
        time_range = self._mcap.time_range
        return 0 if time_range is None else time_range[1] - time_range[0]

    def close(self) -> None:
        self._mcap.close()

    def __enter__(self) -> "McapReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rig_attachment(self, name: str, what: str) -> Rig:
        """The rig stored as the attachment `name`; `what` says in errors what the file should be."""
        texts = [a.data for a in self._mcap.attachments() if a.name == name]
        if len(texts) != 1:
            raise DriveError(f"{self.path}: expected one {name} attachment ({what}), found {len(texts)}")
        try:
            return rig_from_yaml_str(texts[0].decode(), f"{self.path}:{name}")
        except UnicodeDecodeError:
            raise DriveError(f"{self.path}: {name} is not UTF-8 text") from None
