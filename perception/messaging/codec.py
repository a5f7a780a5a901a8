"""Messages <-> wire bytes: pure functions, no sockets (docs/messages.md is the format's reference).

A message is `topic + b"\\0" + msgpack map`. Numeric arrays travel as msgpack ExtType 1:
`uint8 dtype code, uint8 ndim, ndim x uint32 LE dims, then the C-order little-endian data`.
Decoding treats the bytes as untrusted: size limit per topic, msgpack limits, schema version and the
type, dtype and shape of every field are checked; every failure is a MessageError naming the topic and
the field. Unknown keys are ignored so that adding a field does not break older readers; removing or
changing one bumps the topic's schema version in services.py.
"""

from __future__ import annotations

import math
import struct

import msgpack
import numpy as np

from perception.errors import MessageError
from perception.messaging.schemas import (
    BRAKE_STAGES, CAMERA_STATES, HEALTH_STATES, OBJECT_FIELDS, TOPIC_OF, DetectionsMessage, Diagnostics, Envelope,
    HealthMessage, HintsMessage, Message, RangeSource, WireLead, WireObjects,
)
from perception.messaging.services import (
    MAX_LIST_LEN, MAX_MAP_LEN, MAX_OBJECTS, MAX_STR_LEN, SERVICES, topic_prefix,
)

ARRAY_EXT = 1
_MAX_NDIM = 4
_DTYPE_BY_CODE: dict[int, np.dtype] = {
    1: np.dtype("bool"), 2: np.dtype("<u1"), 3: np.dtype("<i4"), 4: np.dtype("<i8"),
    5: np.dtype("<f4"), 6: np.dtype("<f8"),
}
_CODE_BY_DTYPE = {dtype: code for code, dtype in _DTYPE_BY_CODE.items()}
_HEADERS = [struct.Struct(f"<BB{ndim}I") for ndim in range(_MAX_NDIM + 1)]
_COUNT = struct.Struct("<I")  # the one dimension of a 1-d array, after the 2-byte header
_MAX_TOPIC_LEN = max(len(t) for t in SERVICES)


def pack_array(a: np.ndarray) -> msgpack.ExtType:
    code = _CODE_BY_DTYPE.get(a.dtype) if isinstance(a, np.ndarray) and a.flags.c_contiguous else None
    if code is None:  # not yet a C-ordered little-endian array of a wire dtype
        a = np.asarray(a)
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        code = _CODE_BY_DTYPE[a.dtype]
    return msgpack.ExtType(ARRAY_EXT, _HEADERS[a.ndim].pack(code, a.ndim, *a.shape) + a.tobytes())


def encode(message: Message, seq: int, publish_ns: int) -> bytes:
    """The ZeroMQ message for `message`; raises MessageError if it exceeds its topic's size limit."""
    topic = TOPIC_OF[type(message)]
    payload = {"schema": SERVICES[topic].schema_version, "seq": seq, "publish_ns": publish_ns,
               "diag": _pack_diag(message.diag), **_PACK[topic](message)}
    frame = topic_prefix(topic) + msgpack.packb(payload, use_bin_type=True)
    if len(frame) > SERVICES[topic].max_bytes:
        raise MessageError(f"{topic}: message of {len(frame)} bytes exceeds the limit of "
                           f"{SERVICES[topic].max_bytes} bytes")
    return frame


def decode(frame: bytes) -> Envelope:
    """Parse one ZeroMQ message (untrusted); raises MessageError naming the topic and field."""
    end = frame.find(b"\0", 0, _MAX_TOPIC_LEN + 1)
    if end < 0:
        raise MessageError(f"message without a known topic prefix (starts with {bytes(frame[:16])!r})")
    topic = frame[:end].decode("ascii", errors="replace")
    service = SERVICES.get(topic)
    if service is None:
        raise MessageError(f"message with unknown topic {topic!r} (known: {', '.join(SERVICES)})")
    if len(frame) > service.max_bytes:
        raise MessageError(f"{topic}: message of {len(frame)} bytes exceeds the limit of {service.max_bytes} bytes")
    try:
        data = msgpack.unpackb(
            memoryview(frame)[end + 1:], raw=False, strict_map_key=True, use_list=True,
            max_bin_len=service.max_bytes, max_ext_len=service.max_bytes, max_str_len=MAX_STR_LEN,
            max_array_len=MAX_LIST_LEN, max_map_len=MAX_MAP_LEN, ext_hook=_read_array,
        )
    except ValueError as e:  # every msgpack decode error (format, limits, extra data, depth) is one
        raise MessageError(f"{topic}: payload is not valid msgpack within limits: {e or type(e).__name__}") from None
    fields = _Fields(topic, data, "")
    version = fields.integer("schema")
    if version != service.schema_version:
        raise MessageError(f"{topic}: schema version {version}, this reader supports {service.schema_version}")
    return Envelope(topic, fields.integer("seq", minimum=0), fields.integer("publish_ns"), _PARSE[topic](fields))


class _Fields:
    """Typed access to one decoded msgpack map; every error names the topic and the field's path."""

    def __init__(self, topic: str, data: object, path: str):
        if not isinstance(data, dict):  # nested maps are checked by map()
            raise MessageError(f"{topic}: payload must be a map, got {type(data).__name__}")
        self.topic, self._data, self._path = topic, data, path

    def error(self, key: str, what: str) -> MessageError:
        return MessageError(f"{self.topic}: field {self._path + key!r} {what}")

    def keys(self) -> list[str]:
        """The map's keys; a key that is not a msgpack str (bin, int, ...) is an error naming the map."""
        for k in self._data:
            if not isinstance(k, str):
                raise MessageError(f"{self.topic}: field {self._path.rstrip('.')!r} has a key of type "
                                   f"{type(k).__name__} ({_show(k)}); keys must be strings")
        return list(self._data)

    def _get(self, key: str, types: type | tuple[type, ...], expected: str) -> object:
        if key not in self._data:
            raise self.error(key, "is missing")
        value = self._data[key]
        if isinstance(value, bool) or not isinstance(value, types):  # no field is a msgpack bool
            raise self.error(key, f"must be {expected}, got {type(value).__name__}")
        return value

    def integer(self, key: str, minimum: int | None = None) -> int:
        value = self._get(key, int, "an integer")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, key: str) -> float:
        return float(self._get(key, (int, float), "a number"))

    def string(self, key: str, allowed: tuple[str, ...] | None = None) -> str:
        value = self._get(key, str, "a string")
        if allowed is not None and value not in allowed:
            raise self.error(key, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def strings(self, key: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
        values = self._get(key, list, "a list of strings")
        for v in values:
            if not isinstance(v, str):
                raise self.error(key, f"must be a list of strings, has a {type(v).__name__}")
            if allowed is not None and v not in allowed:
                raise self.error(key, f"values must be one of {', '.join(allowed)}, got {v!r}")
        return tuple(values)

    def int_map(self, key: str) -> dict[str, int]:
        sub = self.map(key)
        return {k: sub.integer(k) for k in sub.keys()}

    def map(self, key: str) -> "_Fields":
        return _Fields(self.topic, self._get(key, dict, "a map"), f"{self._path}{key}.")

    def optional_map(self, key: str) -> "_Fields | None":
        if key in self._data and self._data[key] is None:
            return None
        return self.map(key)

    def array(self, key: str, dtype: np.dtype, shape: tuple[int | None, ...]) -> np.ndarray:
        """A binary array of exactly `dtype`; None in `shape` matches any length."""
        value = self._data.get(key)
        if type(value) is np.ndarray and value.dtype == dtype and value.ndim == len(shape):
            for want, got in zip(shape, value.shape):
                if want is not None and want != got:
                    break
            else:
                return value
        if isinstance(value, _BadArray):
            raise self.error(key, value.reason)
        value = self._get(key, np.ndarray, "a binary array")
        want_shape = "x".join("N" if s is None else str(s) for s in shape) or "scalar"
        raise self.error(key, f"must be a {dtype} array of shape {want_shape}, "
                              f"got {value.dtype} of shape {'x'.join(map(str, value.shape)) or 'scalar'}")


def _show(value: object, limit: int = 40) -> str:
    """A bounded repr of an untrusted value, for error messages."""
    text = repr(value[:limit] if isinstance(value, (bytes, str)) else value)
    return text if len(text) <= limit + 3 else text[:limit] + "..."


class _BadArray:
    """An ext value that is not a valid array, kept until its field is read so the error can name it."""
    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def _read_array(code: int, data: bytes) -> np.ndarray | _BadArray:
    """msgpack ext_hook: ext type 1 -> read-only numpy array viewing `data`."""
    if code != ARRAY_EXT:
        return _BadArray(f"must be a binary array (ext type {ARRAY_EXT}), got ext type {code}")
    if len(data) < 2:
        return _BadArray("has a truncated array header")
    dtype, ndim = _DTYPE_BY_CODE.get(data[0]), data[1]
    if dtype is None or ndim > _MAX_NDIM:
        return _BadArray(f"has an invalid array header (dtype code {data[0]}, ndim {ndim})")
    header = _HEADERS[ndim]
    if len(data) < header.size:
        return _BadArray("has a truncated array header")
    if ndim == 1:
        (count,) = _COUNT.unpack_from(data, 2)
        if len(data) - 6 != count * dtype.itemsize:
            return _BadArray(f"has {len(data) - 6} data bytes, shape ({count},) needs {count * dtype.itemsize}")
        return np.frombuffer(data, dtype, offset=6)
    dims = header.unpack_from(data)[2:]
    nbytes = math.prod(dims) * dtype.itemsize
    if len(data) - header.size != nbytes:
        return _BadArray(f"has {len(data) - header.size} data bytes, shape {dims} needs {nbytes}")
    return np.frombuffer(data, dtype, offset=header.size).reshape(dims)


def _pack_diag(d: Diagnostics) -> dict:
    return {"model_id": d.model_id, "cameras": list(d.cameras), "capture_ns": pack_array(d.capture_ns),
            "dropped_frames": pack_array(d.dropped_frames), "stage_ns": dict(d.stage_ns)}


def _parse_diag(f: _Fields) -> Diagnostics:
    cameras = f.strings("cameras")
    n = len(cameras)
    return Diagnostics(f.string("model_id"), cameras, f.array("capture_ns", np.dtype("<i8"), (n,)),
                       f.array("dropped_frames", np.dtype("<i8"), (n,)), f.int_map("stage_ns"))


def _pack_detections(m: DetectionsMessage) -> dict:
    return {"frame_ns": m.frame_ns, "stale": pack_array(m.stale), "classes": list(m.classes),
            "objects": {name: pack_array(getattr(m.objects, name)) for name in OBJECT_FIELDS}}


def _parse_detections(f: _Fields) -> DetectionsMessage:
    diag = _parse_diag(f.map("diag"))
    classes = f.strings("classes")
    o = f.map("objects")
    columns = {}
    n = None
    for name, (dtype, row_shape) in OBJECT_FIELDS.items():
        columns[name] = o.array(name, dtype, (n, *row_shape))
        n = columns[name].shape[0]
    if n > MAX_OBJECTS:
        raise o.error("track_id", f"has {n} objects, the limit is {MAX_OBJECTS}")
    for name, limit, names in (("camera", len(diag.cameras), "cameras"), ("cls", len(classes), "classes")):
        index = columns[name]
        if n and index.view("<u4").max() >= limit:  # as unsigned, a negative index is over any limit
            raise o.error(name, f"has an index outside the {limit} {names}")
    if n and columns["range_source"].max() > max(RangeSource).value:
        raise o.error("range_source", f"has a value outside 0..{max(RangeSource).value}")
    return DetectionsMessage(diag, f.integer("frame_ns"), f.array("stale", np.dtype(bool), (len(diag.cameras),)),
                             classes, WireObjects(**columns))


def _pack_hints(m: HintsMessage) -> dict:
    lead = None if m.lead is None else {"track_id": m.lead.track_id, "gap_m": m.lead.gap_m,
                                        "rel_speed_mps": m.lead.rel_speed_mps, "ttc_s": m.lead.ttc_s}
    return {"frame_ns": m.frame_ns, "lead": lead, "brake": m.brake, "speed_cap_mps": m.speed_cap_mps,
            "free_distance_m": m.free_distance_m, "cut_in_ids": pack_array(m.cut_in_ids),
            "confidence": m.confidence}


def _parse_hints(f: _Fields) -> HintsMessage:
    lf = f.optional_map("lead")
    lead = None if lf is None else WireLead(lf.integer("track_id"), lf.number("gap_m"), lf.number("rel_speed_mps"),
                                            lf.number("ttc_s"))
    cut_in = f.array("cut_in_ids", np.dtype("<i8"), (None,))
    if len(cut_in) > MAX_OBJECTS:
        raise f.error("cut_in_ids", f"has {len(cut_in)} ids, the limit is {MAX_OBJECTS}")
    return HintsMessage(_parse_diag(f.map("diag")), f.integer("frame_ns"), lead, f.string("brake", BRAKE_STAGES),
                        f.number("speed_cap_mps"), f.number("free_distance_m"), cut_in, f.number("confidence"))


def _pack_health(m: HealthMessage) -> dict:
    return {"state": m.state, "reasons": list(m.reasons), "camera_states": list(m.camera_states),
            "latency_p50_ms": m.latency_p50_ms, "latency_p99_ms": m.latency_p99_ms, "rate_hz": m.rate_hz,
            "drop_ratio": m.drop_ratio, "bad_frames": m.bad_frames, "publish_drops": m.publish_drops}


def _parse_health(f: _Fields) -> HealthMessage:
    diag = _parse_diag(f.map("diag"))
    camera_states = f.strings("camera_states", CAMERA_STATES)
    if len(camera_states) != len(diag.cameras):
        raise f.error("camera_states", f"has {len(camera_states)} states for {len(diag.cameras)} cameras")
    return HealthMessage(diag, f.string("state", HEALTH_STATES), f.strings("reasons"), camera_states,
                         f.number("latency_p50_ms"), f.number("latency_p99_ms"), f.number("rate_hz"),
                         f.number("drop_ratio"), f.integer("bad_frames", minimum=0), f.integer("publish_drops", minimum=0))


_PACK = {"detections": _pack_detections, "hints": _pack_hints, "health": _pack_health}
_PARSE = {"detections": _parse_detections, "hints": _parse_hints, "health": _parse_health}
assert set(_PACK) == set(_PARSE) == set(SERVICES) == set(TOPIC_OF.values()), "services.py and codec.py disagree"
