"""Messages <-> wire bytes: pure functions, no sockets (docs/messages.md is the format's reference).

A message is `topic + b"\\0" + msgpack map`. Numeric arrays travel as msgpack bin of little-endian values
whose dtype the schema fixes (their length gives the count); the detections object table is one bin of
fixed-layout records (schemas.OBJECT_RECORD). Decoding treats the bytes as untrusted: size limit per topic,
msgpack limits, schema version and the type, length and values of every field are checked; every failure
is a MessageError naming the topic and the field. Unknown keys are ignored so that adding a field does not
break older readers; removing or changing one bumps the topic's schema version in services.py.

The decoder is written for a message that arrives with cold caches (one every frame set, other work in
between): its cost is about the number of distinct Python and numpy operations it runs, so arrays are numpy
views of the msgpack bins (no ext hook, no copies) and the object table is checked in a few vectorised calls.
"""

from __future__ import annotations

import functools

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

_I8, _BOOL = np.dtype("<i8"), np.dtype("bool")
_MAX_TOPIC_LEN = max(len(t) for t in SERVICES)


def _bin(a: np.ndarray, dtype: np.dtype) -> memoryview:
    """The little-endian bytes of `a` as `dtype`, for msgpack bin (no copy when `a` is one already)."""
    return np.ascontiguousarray(a, dtype).data


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
    exts: list[_Ext] = []
    try:
        data = msgpack.unpackb(
            memoryview(frame)[end + 1:], raw=False, strict_map_key=True, use_list=True,
            max_bin_len=service.max_bytes, max_ext_len=service.max_bytes, max_str_len=MAX_STR_LEN,
            max_array_len=MAX_LIST_LEN, max_map_len=MAX_MAP_LEN, ext_hook=lambda code, _: _Ext(code, exts),
        )
    except ValueError as e:  # every msgpack decode error (format, limits, extra data, depth) is one
        raise MessageError(f"{topic}: payload is not valid msgpack within limits: {e or type(e).__name__}") from None
    if exts:
        raise MessageError(f"{topic}: field {_path_of(data, exts[0])!r} is msgpack ext type {exts[0].code}: no field "
                           "is an ext type (numeric arrays are msgpack bin)")
    fields = _Fields(topic, data, "")
    version = fields.integer("schema")
    if version != service.schema_version:
        raise MessageError(f"{topic}: schema version {version}, this reader supports {service.schema_version}")
    return _checked(Envelope, topic=topic, seq=fields.integer("seq", minimum=0),
                    publish_ns=fields.integer("publish_ns"), message=_PARSE[topic](fields))


class _Ext:
    """What the msgpack ext_hook returns for an ext value. No schema uses ext types, so any one (an empty one
    too, which max_ext_len=0 would let through) fails the message, after unpacking, so that the error can name
    where it was (the hook itself does not know)."""

    __slots__ = ("code",)

    def __init__(self, code: int, seen: list) -> None:
        self.code = code
        seen.append(self)


def _path_of(data: object, target: _Ext) -> str:
    """The field path ('diag.stage_ns', 'a[2].b') of `target` in decoded msgpack `data` (iterative: nesting is
    bounded by msgpack's limits, not by Python's recursion limit)."""
    stack: list[tuple[object, str]] = [(data, "")]
    while stack:
        value, path = stack.pop()
        if value is target:
            return path
        if type(value) is dict:
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in value.items())
        elif type(value) is list:
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
    return "?"


def _checked(cls: type, **fields: object):
    """An instance of a schemas dataclass from fields the decoder has checked already: the msgpack limits and
    the field checks cover what its __post_init__ would convert and check again (types, shapes, lengths)."""
    instance = cls.__new__(cls)
    instance.__dict__.update(fields)
    return instance


_MISSING = object()
_INT, _NUMBER, _STR, _LIST, _DICT = (int,), (int, float), (str,), (list,), (dict,)
_BYTES = (bytes,)


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

    def array(self, key: str, dtype: np.dtype, count: int | None = None) -> np.ndarray:
        """A msgpack bin of `count` (None: any number of) little-endian `dtype` items, as a read-only numpy view
        of the decoded bytes (aligned: CPython's bytes data is 16-byte aligned). Bool items must be 0 or 1."""
        value = self._get(key, _BYTES, "binary (msgpack bin)")
        size = dtype.itemsize
        if count is None:
            if len(value) % size:
                raise self.error(key, f"has {len(value)} bytes, not a whole number of {size}-byte "
                                      f"{'records' if dtype.names else dtype.name + ' values'}")
        elif len(value) != count * size:
            raise self.error(key, f"has {len(value)} bytes, {count} {dtype.name} values need {count * size}")
        if dtype is _BOOL and max(value, default=0) > 1:
            raise self.error(key, "has a byte other than 0 or 1")
        return np.frombuffer(value, dtype)


def _show(value: object, limit: int = 40) -> str:
    """A bounded repr of an untrusted value, for error messages."""
    text = repr(value[:limit] if isinstance(value, (bytes, str)) else value)
    return text if len(text) <= limit + 3 else text[:limit] + "..."


def _pack_diag(d: Diagnostics) -> dict:
    return {"model_id": d.model_id, "cameras": d.cameras, "capture_ns": _bin(d.capture_ns, _I8),
            "dropped_frames": _bin(d.dropped_frames, _I8), "stage_ns": d.stage_ns}


def _parse_diag(f: _Fields) -> Diagnostics:
    cameras = f.strings("cameras")
    n = len(cameras)
    return _checked(Diagnostics, model_id=f.string("model_id"), cameras=cameras,
                    capture_ns=f.array("capture_ns", _I8, n), dropped_frames=f.array("dropped_frames", _I8, n),
                    stage_ns=f.int_map("stage_ns"))


def _pack_detections(m: DetectionsMessage) -> dict:
    return {"frame_ns": m.frame_ns, "stale": _bin(m.stale, _BOOL), "classes": m.classes,
            "objects": m.objects.to_records().data}


def _parse_detections(f: _Fields) -> DetectionsMessage:
    diag = _parse_diag(f.map("diag"))
    classes = f.strings("classes")
    records = f.array("objects", OBJECT_RECORD)
    if len(records) > MAX_OBJECTS:
        raise f.error("objects", f"has {len(records)} objects, the limit is {MAX_OBJECTS}")
    _check_objects(f, records, len(diag.cameras), len(classes))
    return _checked(DetectionsMessage, diag=diag, frame_ns=f.integer("frame_ns"),
                    stale=f.array("stale", _BOOL, len(diag.cameras)), classes=classes,
                    objects=WireObjects.from_records(records))


# The decoder's view of an object record (OBJECT_RECORD) for its value checks: the two indices, the six
# floats that must be finite (score, box x0 y0 x1 y1, age_s), the box's two corners and the two one-byte codes.
_CHECK_VIEW = np.dtype({
    "names": ["index", "finite", "corner0", "corner1", "code"],
    "formats": [("<u4", 2), ("<f4", 6), ("<f4", 2), ("<f4", 2), ("u1", 2)],
    "offsets": [OBJECT_RECORD.fields["camera"][1], OBJECT_RECORD.fields["score"][1], OBJECT_RECORD.fields["box"][1],
                OBJECT_RECORD.fields["box"][1] + 8, OBJECT_RECORD.fields["range_source"][1]],
    "itemsize": OBJECT_RECORD.itemsize})
assert _CHECK_VIEW.fields["finite"][1] + 24 == OBJECT_RECORD.fields["range_m"][1], "score, box, age_s not adjacent"
# Every check is `a < b` (one numpy ufunc for all: with cold caches a message costs about the number of
# distinct numpy operations it runs): finite in [low, high] is nextafter(low, -inf) < finite <
# nextafter(high, inf); NaN fails both.
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


@functools.lru_cache(maxsize=None)  # at most (MAX_LIST_LEN + 1) ** 2 pairs
def _index_limits(cameras: int, classes: int) -> np.ndarray:
    return np.array((cameras, classes), np.uint32)  # as unsigned, a negative index is over any limit


def _check_objects(f: _Fields, records: np.ndarray, cameras: int, classes: int) -> None:
    """Vectorised value checks of the object table `records` (field "objects" of `f`), whatever the number of
    objects: five comparisons, and one search for a False byte in their results (fresh contiguous bool arrays)
    instead of five numpy reductions; the error names the first bad column."""
    v = records.view(_CHECK_VIEW)
    finite = v["finite"]
    oks = (v["index"] < _index_limits(cameras, classes), _FINITE_ABOVE < finite, finite < _FINITE_BELOW,
           v["corner0"] < v["corner1"], v["code"] < _CODE_BELOW)
    if b"\0" not in b"".join(oks):
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
            "free_distance_m": m.free_distance_m, "cut_in_ids": _bin(m.cut_in_ids, _I8),
            "confidence": m.confidence}


def _parse_hints(f: _Fields) -> HintsMessage:
    lf = f.optional_map("lead")
    lead = None if lf is None else WireLead(lf.integer("track_id"), lf.number("gap_m"), lf.number("rel_speed_mps"),
                                            lf.number("ttc_s"))
    cut_in = f.array("cut_in_ids", _I8)
    if len(cut_in) > MAX_OBJECTS:
        raise f.error("cut_in_ids", f"has {len(cut_in)} ids, the limit is {MAX_OBJECTS}")
    return HintsMessage(_parse_diag(f.map("diag")), f.integer("frame_ns"), lead, f.string("brake", BRAKE_STAGES),
                        f.number("speed_cap_mps"), f.number("free_distance_m"), cut_in, f.number("confidence"))


def _pack_health(m: HealthMessage) -> dict:
    return {"state": m.state, "reasons": m.reasons, "camera_states": m.camera_states,
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
