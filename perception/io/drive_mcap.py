"""Opening MCAP files for reading: the index from the summary section, or rebuilt from the data when the
file was cut (a recorder killed mid-drive) — then every complete chunk before the cut is read and a
warning says where the file ends. A damaged chunk (CRC failure, bad compression) is skipped with a
BadChunkWarning naming it; the other chunks are read. Every read error is a DriveError.

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
from mcap.reader import NonSeekingReader, SeekingReader, make_message_queue
from mcap.records import Attachment, AttachmentIndex, Channel, Chunk, ChunkIndex, Message, Schema
from mcap.stream_reader import MAGIC_SIZE, breakup_chunk
from mcap.summary import Summary

from calib.rig import Rig, rig_from_yaml_str
from perception.errors import DriveError
from perception.yaml_io import brief

MCAP_MAGIC = b"\x89MCAP0\r\n"
RECORD_SIZE_LIMIT = 512 * 2**20  # one chunk or attachment; a raw 40 MP NV12 image is 60 MB
# What reading a damaged record can raise (short reads, CRC, zstd, struct, bad UTF-8, unknown ids).
_CORRUPT = (McapError, ValueError, struct.error, zstandard.ZstdError, KeyError)


class TruncatedDriveWarning(UserWarning):
    """The drive file ends early; it is read up to the last complete chunk."""


class BadChunkWarning(UserWarning):
    """A chunk of the drive is damaged; its messages are skipped, the rest of the file is read."""


class McapFile:
    """An open MCAP file: its summary (read or rebuilt), channels by topic, messages in log-time order."""

    def __init__(self, path: str | Path, decoder_factories: Iterable[DecoderFactory] = ()):
        self.path = Path(path)
        self.truncated_at: int | None = None  # where a cut or damaged file stops being readable
        try:
            self._file = _BoundedFile(open(self.path, "rb"))
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
        except DriveError:
            self._file.close()
            raise
        except Exception as e:  # noqa: BLE001 - a damaged summary fails inside the library (TypeError ...)
            self._file.close()
            raise DriveError(f"{self.path}: unreadable summary: {type(e).__name__}: {str(e)[:200]}") from None
        except BaseException:
            self._file.close()
            raise
        self.channels = {c.topic: c for c in self.summary.channels.values()}
        self._factories = tuple(decoder_factories)
        self.skipped_chunks = 0  # damaged chunks met so far
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

    def has_messages(self, topics: Iterable[str]) -> bool:
        """Whether the index lists any message of `topics` (a rebuilt index: any complete chunk)."""
        topics = set(topics)
        ids = {c.id for c in self.summary.channels.values() if c.topic in topics}
        stats = self.summary.statistics
        if stats is not None and stats.channel_message_counts:
            return any(stats.channel_message_counts.get(i, 0) for i in ids)
        return bool(ids) and bool(self.summary.chunk_indexes)

    def attachments(self) -> Iterator[Attachment]:
        try:
            yield from self._reader.iter_attachments()
        except _CORRUPT as e:
            raise DriveError(f"{self.path}: corrupt attachment: {type(e).__name__} {e}") from None

    def metadata(self, name: str) -> dict[str, str] | None:
        """The metadata record `name` (the first one), None when the file has none."""
        try:
            for record in self._reader.iter_metadata():
                if record.name == name:
                    return dict(record.metadata)
        except _CORRUPT as e:
            raise DriveError(f"{self.path}: unreadable {name} metadata: {type(e).__name__} {e}") from None
        return None

    def messages(self, topics: Iterable[str], start_ns: int | None = None,
                 end_ns: int | None = None) -> Iterator[tuple[Channel, Message, Any]]:
        """(channel, message, decoded) of `topics` with start_ns <= log time < end_ns, in log-time order."""
        topics = [t for t in topics if t in self.channels]
        if not topics:
            return
        if not self.summary.chunk_indexes:
            yield from self._unchunked_messages(topics, start_ns, end_ns)
            return
        queue = make_message_queue(log_time_order=True)
        for chunk_index in _chunks_matching(self.summary, set(topics), start_ns, end_ns):
            queue.push(chunk_index)
        while queue:
            item = queue.pop()
            if not isinstance(item, ChunkIndex):
                _, channel, message = item[0]
                yield channel, message, self._decode(channel, message)
                continue
            for index, record in enumerate(self._chunk_messages(item)):
                channel = self.summary.channels.get(record.channel_id)
                if channel is None or channel.topic not in topics:
                    continue
                if (start_ns is not None and record.log_time < start_ns) or (
                        end_ns is not None and record.log_time >= end_ns):
                    continue
                queue.push(((None, channel, record), item.chunk_start_offset, index))

    def _chunk_messages(self, index: ChunkIndex) -> list[Message]:
        """The messages of one indexed chunk; [] with a BadChunkWarning when it is damaged."""
        try:
            self._file.seek(index.chunk_start_offset)
            opcode, _ = struct.unpack("<BQ", self._file.read(9))
            if opcode != Opcode.CHUNK:
                raise McapError(f"record opcode {opcode:#x} is not a chunk")
            return [r for r in _chunk_records(Chunk.read(ReadDataStream(self._file))) if isinstance(r, Message)]
        except (*_CORRUPT, OSError) as e:
            self.skipped_chunks += 1
            warnings.warn(f"{self.path}: skipped the damaged chunk at byte {index.chunk_start_offset} (log time "
                          f"{index.message_start_time}..{index.message_end_time} ns): {str(e)[:200]}",
                          BadChunkWarning, stacklevel=4)
            return []

    def _unchunked_messages(self, topics: list[str], start_ns: int | None,
                            end_ns: int | None) -> Iterator[tuple[Channel, Message, Any]]:
        """Messages of a file whose messages sit outside chunks (no chunk index)."""
        self._file.seek(0)
        iterator = NonSeekingReader(self._file, validate_crcs=True, record_size_limit=RECORD_SIZE_LIMIT
                                    ).iter_messages(topics, log_time_order=True, starting_at=start_ns,
                                                    ending_before=end_ns)
        while True:
            try:
                item = next(iterator, None)
            except _CORRUPT as e:
                raise DriveError(f"{self.path}: corrupt record: {str(e)[:200]}") from None
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
                except Exception as e:  # noqa: BLE001 - a damaged schema fails inside protobuf / CDR (TypeError ...)
                    raise DriveError(f"{self.path}: {channel.topic}: unreadable schema "
                                     f"{brief(schema.name) if schema else None}: {type(e).__name__}: "
                                     f"{str(e)[:200]}") from None
                if decoder is not None:
                    break
            else:
                raise DriveError(f"{self.path}: {channel.topic}: no decoder for message encoding "
                                 f"{channel.message_encoding!r} with schema {schema.name if schema else None!r}")
            self._decoders[channel.id] = decoder
        try:
            return decoder(message.data)
        except Exception as e:  # noqa: BLE001 - protobuf / CDR / JSON decoders raise their own types
            raise DriveError(f"{self.where(channel, message)}: cannot decode message: {str(e)[:200]}") from None

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
            self.truncated_at = end
            warnings.warn(f"{self.path}: file is truncated or damaged at byte {end}; read "
                          f"{len(summary.chunk_indexes)} complete chunks before it", TruncatedDriveWarning,
                          stacklevel=4)
        return summary


def _chunks_matching(summary: Summary, topics: set[str], start_ns: int | None,
                     end_ns: int | None) -> list[ChunkIndex]:
    """The chunks that may hold messages of `topics` in [start_ns, end_ns). As the mcap library's private
    `_chunks_matching_topics`, except that a chunk index naming a channel the summary lacks (a damaged
    index) is kept and read, where the library raised KeyError: reading the chunk tells what is in it."""
    out = []
    for chunk in summary.chunk_indexes:
        if (start_ns is not None and chunk.message_end_time < start_ns) or (
                end_ns is not None and chunk.message_start_time >= end_ns):
            continue
        channels = [summary.channels.get(i) for i in chunk.message_index_offsets]
        if not channels or any(c is None or c.topic in topics for c in channels):
            out.append(chunk)
    return out


class _BoundedFile:
    """The drive file as the mcap library reads it, with every read clamped to the bytes left in the file.

    The library reads a record's inner fields with the lengths the file states (an attachment's data
    length, a string's size); `read(n)` of a buffered file allocates n bytes first, so one flipped bit in
    such a length asked for exabytes (MemoryError). Clamped, a lying length gives a short read, which the
    library reports as a damaged record."""

    def __init__(self, f: io.BufferedReader) -> None:
        self._f = f
        self._size = f.seek(0, io.SEEK_END)
        f.seek(0)

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._size - self._f.tell())
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()


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


def _chunk_records(chunk: Chunk) -> list:
    """The records of a chunk, its sizes checked first: the stated uncompressed size against the limit and,
    for zstd, against the size the compressed frame itself declares (zstandard allocates that one: a
    damaged frame header asked for exabytes, MemoryError)."""
    if chunk.uncompressed_size > RECORD_SIZE_LIMIT:
        raise McapError(f"chunk claims {chunk.uncompressed_size} bytes uncompressed")
    if chunk.compression == "zstd":
        declared = zstandard.frame_content_size(chunk.data)
        if declared not in (-1, chunk.uncompressed_size):
            raise McapError(f"zstd frame declares {declared} bytes, the chunk {chunk.uncompressed_size}")
    return breakup_chunk(chunk, validate_crc=True)


def _index_record(summary: Summary, opcode: int, body: bytes, offset: int) -> None:
    stream = ReadDataStream(io.BytesIO(body))
    if opcode == Opcode.CHUNK:
        chunk = Chunk.read(stream)
        records = _chunk_records(chunk)
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
