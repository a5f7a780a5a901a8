"""Messages <-> wire bytes: pure functions, no sockets (docs/messages.md is the format's reference).

A message is `topic + b"\\0" + msgpack map`. Numeric arrays travel as msgpack ExtType 1:
`uint8 dtype code, uint8 ndim, ndim x uint32 LE dims, then the C-order little-endian data`; the
detections object table is one msgpack bin of fixed-layout records (schemas.OBJECT_RECORD).
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
    BRAKE_STAGES, CAMERA_STATES, HEALTH_STATES, OBJECT_RECORD, TOPIC_OF, DetectionsMessage, Diagnostics, Envelope,
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
_I8, _BOOL = np.dtype("<i8"), np.dtype("bool")
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
    return _checked(Envelope, topic=topic, seq=fields.integer("seq", minimum=0),
                    publish_ns=fields.integer("publish_ns"), message=_PARSE[topic](fields))


def _checked(cls: type, **fields: object):
    """An instance of a schemas dataclass from fields the decoder has checked already: the msgpack limits and
    the field checks cover what its __post_init__ would convert and check again (types, shapes, lengths)."""
    instance = cls.__new__(cls)
    instance.__dict__.update(fields)
    return instance


_MISSING = object()
_INT, _NUMBER, _STR, _LIST, _DICT = (int,), (int, float), (str,), (list,), (dict,)
_BYTES, _ARRAY = (bytes,), (np.ndarray,)


class _Fields:
    """Typed access to one decoded msgpack map; every error names the topic and the field's path."""

    def __init__(self, topic: str, data: object, path: str):
        if type(data) is not dict:  # nested maps are checked by map()
            raise MessageError(f"{topic}: payload must be a map, got {type(data).__name__}")
        self.topic, self._data, self._path = topic, data, path

    def error(self, key: str, what: str) -> MessageError:
        return MessageError(f"{self.topic}: field {self._path + key!r} {what}")

    def keys(self) -> list[str]:
        """The map's keys; a key that is not a msgpack str (bin, int, ...) is an error naming the map."""
        for k in self._data:
            if type(k) is not str:
                raise MessageError(f"{self.topic}: field {self._path.rstrip('.')!r} has a key of type "
                                   f"{type(k).__name__} ({_show(k)}); keys must be strings")
        return list(self._data)

    def _get(self, key: str, types: tuple[type, ...], expected: str) -> object:
        """The value if its type is exactly one of `types` (msgpack makes exact types; a bool is not an int)."""
        value = self._data.get(key, _MISSING)
        if type(value) in types:
            return value
        if value is _MISSING:
            raise self.error(key, "is missing")
        raise self.error(key, f"must be {expected}, got {type(value).__name__}")

    def integer(self, key: str, minimum: int | None = None) -> int:
        value = self._get(key, _INT, "an integer")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, key: str) -> float:
        return float(self._get(key, _NUMBER, "a number"))

    def string(self, key: str, allowed: tuple[str, ...] | None = None) -> str:
        value = self._get(key, _STR, "a string")
        if allowed is not None and value not in allowed:
            raise self.error(key, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def strings(self, key: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
        values = self._get(key, _LIST, "a list of strings")
        for v in values:
            if type(v) is not str:
                raise self.error(key, f"must be a list of strings, has a {type(v).__name__}")
            if allowed is not None and v not in allowed:
                raise self.error(key, f"values must be one of {', '.join(allowed)}, got {v!r}")
        return tuple(values)

    def int_map(self, key: str) -> dict[str, int]:
        sub = self.map(key)
        for k, v in sub._data.items():
            if type(v) is not int or type(k) is not str:
                sub.keys()  # names a key that is not a string
                sub.integer(k)
        return sub._data  # the decoder's own dict: nothing else holds it

    def map(self, key: str) -> "_Fields":
        return _Fields(self.topic, self._get(key, _DICT, "a map"), f"{self._path}{key}.")

    def optional_map(self, key: str) -> "_Fields | None":
        if key in self._data and self._data[key] is None:
            return None
        return self.map(key)

    def binary(self, key: str) -> bytes:
        return self._get(key, _BYTES, "binary (msgpack bin)")

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
        value = self._get(key, _ARRAY, "a binary array")
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
    return _checked(Diagnostics, model_id=f.string("model_id"), cameras=cameras,
                    capture_ns=f.array("capture_ns", _I8, (n,)), dropped_frames=f.array("dropped_frames", _I8, (n,)),
                    stage_ns=f.int_map("stage_ns"))


def _pack_detections(m: DetectionsMessage) -> dict:
    return {"frame_ns": m.frame_ns, "stale": pack_array(m.stale), "classes": list(m.classes),
            "objects": m.objects.to_records().data}


def _parse_detections(f: _Fields) -> DetectionsMessage:
    diag = _parse_diag(f.map("diag"))
    classes = f.strings("classes")
    table = f.binary("objects")
    if len(table) % OBJECT_RECORD.itemsize:
        raise f.error("objects", f"has {len(table)} bytes, not a whole number of {OBJECT_RECORD.itemsize}-byte "
                                 f"records")
    records = np.frombuffer(table, OBJECT_RECORD).copy()  # aligned: numpy's fast loops (the bin can be anywhere)
    records.flags.writeable = False
    if len(records) > MAX_OBJECTS:
        raise f.error("objects", f"has {len(records)} objects, the limit is {MAX_OBJECTS}")
    _check_objects(f, records, len(diag.cameras), len(classes))
    return _checked(DetectionsMessage, diag=diag, frame_ns=f.integer("frame_ns"),
                    stale=f.array("stale", _BOOL, (len(diag.cameras),)), classes=classes,
                    objects=WireObjects.from_records(records))


# The decoder's view of an object record (OBJECT_RECORD) for its value checks: the two indices, the six
# floats that must be finite (score, box x0 y0 x1 y1, age_s) and the two one-byte codes.
_CHECK_VIEW = np.dtype({"names": ["index", "finite", "code"], "formats": [("<u4", 2), ("<f4", 6), ("u1", 2)],
                        "offsets": [OBJECT_RECORD.fields[name][1] for name in ("camera", "score", "range_source")],
                        "itemsize": OBJECT_RECORD.itemsize})
assert _CHECK_VIEW.fields["finite"][1] + 24 == OBJECT_RECORD.fields["range_m"][1], "score, box, age_s not adjacent"
# Every check is `a < b` (one numpy ufunc for all, which keeps a message's first-touch cost down):
# finite in [low, high] is nextafter(low, -inf) < finite < nextafter(high, inf); NaN fails both.
_FINITE_ABOVE = np.nextafter(np.array([0.0, -0.5, -0.5, -0.5, -0.5, 0.0], np.float32), np.float32(-np.inf))
_FINITE_BELOW = np.array([np.nextafter(np.float32(1), np.float32(2)), *[np.inf] * 5], np.float32)
_CODE_BELOW = np.array([max(RangeSource).value + 1, 2], np.uint8)  # range_source, coasting (a bool is 0 or 1)
_COLUMN_PROBLEMS = (
    (("camera", "has an index outside the {cameras} cameras"), ("cls", "has an index outside the {classes} classes")),
    (("score", "has a value below 0 or NaN"), *[("box", "has a coordinate below -0.5 or NaN")] * 4,
     ("age_s", "has a negative or NaN value")),
    (("score", "has a value above 1 or NaN"), *[("box", "has an infinite or NaN coordinate")] * 4,
     ("age_s", "has an infinite or NaN value")),
    (("box", "has a box with x0 >= x1"), ("box", "has a box with y0 >= y1")),
    (("range_source", f"has a value outside 0..{max(RangeSource).value}"),
     ("coasting", "has a byte other than 0 or 1")),
)


def _check_objects(f: _Fields, records: np.ndarray, cameras: int, classes: int) -> None:
    """Vectorised value checks of a decoded object table: a few numpy calls whatever the number of objects
    (the cost of a message is the number of calls); the error names the first bad column."""
    v = records.view(_CHECK_VIEW)
    finite = v["finite"]
    oks = (v["index"] < np.array((cameras, classes), np.uint32),  # as unsigned, a negative index is over any limit
           _FINITE_ABOVE < finite, finite < _FINITE_BELOW,
           finite[:, 1:3] < finite[:, 3:5],
           v["code"] < _CODE_BELOW)
    if oks[0].all() and oks[1].all() and oks[2].all() and oks[3].all() and oks[4].all():
        return
    for ok, problems in zip(oks, _COLUMN_PROBLEMS):
        bad = np.flatnonzero(~ok.all(0))
        if len(bad):
            name, what = problems[bad[0]]
            raise f.error(f"objects.{name}", what.format(cameras=cameras, classes=classes))


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
