"""The node's configuration: one YAML file, validated at load; every error names the key and the reason.

    source:   {kind: drive, drive: null, pacing: realtime, loop: false}  # drive | cameras | framebus
    rig: null                 # rig YAML; null = the drive's own rig (required for cameras / framebus)
    sync:     {anchor: null, max_skew_ms: 20}   # anchor null = the rig's first camera
    model: null               # ONNX file; null = the bundled demo model
    engine:   {kind: onnxruntime, threads: 2}   # onnxruntime | tensorrt
    preprocess: cpu           # cpu | cuda
    decode:   {score_threshold: 0.3, nms_iou: 0.5}  # score_threshold: a number or {class: number}
    tracker:  {...}  ranging: {...}  hints: {...}   # perception.track / perception.hints configs
    publish:  {endpoint: tcp://127.0.0.1:7450, sndhwm: 64, curve_secret_key: null, curve_clients_dir: null}
    health:   {rate_hz: 2, lag_drop_ratio: 0.2, lost_after_s: 1.0, window_s: 5.0}
    record: null              # MCAP file to record the outputs into
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perception.errors import ConfigError
from perception.hints.config import HintsConfig
from perception.messaging.services import DEFAULT_ENDPOINT
from perception.config_base import ConfigBase, param
from perception.track.config import TrackerConfig
from perception.track.ranging import RangingConfig
from perception.yaml_io import brief, load_yaml

PACINGS = ("realtime", "fast", "lockstep")
SOURCE_KINDS = ("drive", "cameras", "framebus")
ENGINES = ("onnxruntime", "tensorrt")
PREPROCESSORS = ("cpu", "cuda")
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class SourceConfig:
    kind: str = "drive"
    drive: str | None = None  # None: the bundled demo drive, generated on first use
    pacing: str = "realtime"
    loop: bool = False
    cameras: dict[str, str] = field(default_factory=dict)  # kind cameras: name -> OpenCV source spec
    endpoint: str | None = None  # kind framebus


@dataclass(frozen=True)
class SyncSection(ConfigBase):
    max_skew_ms: float = param(20.0, "other cameras join the anchor's frame set within this skew", unit="ms",
                               ge=0.0, lt=1000.0)


@dataclass(frozen=True)
class EngineSection:
    kind: str = "onnxruntime"
    threads: int | None = 2


@dataclass(frozen=True)
class DecodeSection:
    score_threshold: float | dict[str, float] = 0.3
    nms_iou: float = 0.5


@dataclass(frozen=True)
class PublishSection:
    endpoint: str | None = DEFAULT_ENDPOINT  # None: no socket (the outputs go to the other sinks only)
    sndhwm: int = 64
    curve_secret_key: str | None = None   # server secret key file (zmq.auth format)
    curve_clients_dir: str | None = None  # directory of authorised clients' public key files


@dataclass(frozen=True)
class HealthConfig(ConfigBase):
    rate_hz: float = param(2.0, "health messages per second (of frame-set time; wall time when no frames come)",
                           unit="Hz", gt=0.0, le=100.0)
    lag_drop_ratio: float = param(0.2, "degraded when more than this share of captured frames is dropped",
                                  gt=0.0, lt=1.0)
    lost_after_s: float = param(1.0, "a camera without frames this long is lost (fault if it is the anchor)",
                                unit="s", gt=0.0)
    window_s: float = param(5.0, "window of the latency percentiles and drop ratio", unit="s", gt=0.0)


@dataclass(frozen=True)
class NodeConfig:
    source: SourceConfig = SourceConfig()
    rig: str | None = None
    anchor: str | None = None
    sync: SyncSection = SyncSection()
    model: str | None = None
    engine: EngineSection = EngineSection()
    preprocess: str = "cpu"
    decode: DecodeSection = DecodeSection()
    tracker: TrackerConfig = TrackerConfig()
    ranging: RangingConfig = RangingConfig()
    hints: HintsConfig = HintsConfig()
    publish: PublishSection = PublishSection()
    health: HealthConfig = HealthConfig()
    record: str | None = None


def load_config(path: str | Path | None) -> NodeConfig:
    """Read and validate a node YAML file; None gives the defaults (the embedded demo)."""
    if path is None:
        return NodeConfig()
    p = Path(path)
    data = load_yaml(p, MAX_CONFIG_BYTES, ConfigError)
    return config_from_dict(data, str(p), base_dir=p.parent)


def config_from_dict(data: Any, where: str, base_dir: Path | None = None) -> NodeConfig:
    """Validate a parsed configuration; relative file paths are resolved against `base_dir`."""
    if data is None:
        data = {}
    d = _mapping(data, where)
    _known(d, where, [f for f in NodeConfig.__dataclass_fields__ if f != "anchor"])

    def path_or_none(key: str, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}.{key}: must be a file path, got {brief(value)}")
        return str(base_dir / value) if base_dir is not None and not Path(value).is_absolute() else value

    src = _mapping(d.get("source"), f"{where}.source")
    _known(src, f"{where}.source", list(SourceConfig.__dataclass_fields__))
    kind = _choice(src.get("kind", "drive"), SOURCE_KINDS, f"{where}.source.kind")
    pacing = _choice(src.get("pacing", "realtime"), PACINGS, f"{where}.source.pacing")
    cameras = src.get("cameras") or {}
    if not isinstance(cameras, Mapping) or not all(isinstance(k, str) and isinstance(v, (str, int))
                                                    for k, v in cameras.items()):
        raise ConfigError(f"{where}.source.cameras: must map camera names to source specs, got {brief(cameras)}")
    if kind == "cameras" and not cameras:
        raise ConfigError(f"{where}.source.cameras: kind 'cameras' needs at least one camera")
    endpoint = src.get("endpoint")
    if kind == "framebus" and not isinstance(endpoint, str):
        raise ConfigError(f"{where}.source.endpoint: kind 'framebus' needs an endpoint like tcp://127.0.0.1:7460")
    loop = src.get("loop", False)
    if not isinstance(loop, bool):
        raise ConfigError(f"{where}.source.loop: must be true or false, got {brief(loop)}")
    source = SourceConfig(kind, path_or_none("source.drive", src.get("drive")), pacing, loop,
                          {k: str(v) for k, v in cameras.items()}, endpoint)

    rig = path_or_none("rig", d.get("rig"))
    if kind != "drive" and rig is None:
        raise ConfigError(f"{where}.rig: a rig calibration file is needed for source kind {kind!r}")

    sync_d = dict(_mapping(d.get("sync"), f"{where}.sync"))
    anchor = sync_d.pop("anchor", None)
    if anchor is not None and not isinstance(anchor, str):
        raise ConfigError(f"{where}.sync.anchor: must be a camera name, got {brief(anchor)}")
    sync = SyncSection.from_dict(sync_d, f"{where}.sync")

    eng = _mapping(d.get("engine"), f"{where}.engine")
    _known(eng, f"{where}.engine", list(EngineSection.__dataclass_fields__))
    threads = eng.get("threads", 2)
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ConfigError(f"{where}.engine.threads: must be a positive integer or null, got {brief(threads)}")
    engine = EngineSection(_choice(eng.get("kind", "onnxruntime"), ENGINES, f"{where}.engine.kind"), threads)

    dec = _mapping(d.get("decode"), f"{where}.decode")
    _known(dec, f"{where}.decode", list(DecodeSection.__dataclass_fields__))
    score = dec.get("score_threshold", 0.3)
    scores = score if isinstance(score, Mapping) else {"*": score}
    for name, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ConfigError(f"{where}.decode.score_threshold{'' if name == '*' else '.' + str(name)}: "
                              f"must be a number in (0, 1], got {brief(value)}")
    nms = dec.get("nms_iou", 0.5)
    if isinstance(nms, bool) or not isinstance(nms, (int, float)) or not 0 < nms <= 1:
        raise ConfigError(f"{where}.decode.nms_iou: must be a number in (0, 1], got {brief(nms)}")
    decode = DecodeSection(dict(score) if isinstance(score, Mapping) else float(score), float(nms))

    pub = _mapping(d.get("publish"), f"{where}.publish")
    _known(pub, f"{where}.publish", list(PublishSection.__dataclass_fields__))
    endpoint_out = pub.get("endpoint", DEFAULT_ENDPOINT)
    if endpoint_out is not None and (not isinstance(endpoint_out, str)
                                     or not endpoint_out.startswith(("tcp://", "ipc://", "inproc://"))):
        raise ConfigError(f"{where}.publish.endpoint: must be a tcp://, ipc:// or inproc:// endpoint, "
                          f"got {brief(endpoint_out)}")
    hwm = pub.get("sndhwm", 64)
    if not isinstance(hwm, int) or isinstance(hwm, bool) or hwm < 1:
        raise ConfigError(f"{where}.publish.sndhwm: must be a positive integer, got {brief(hwm)}")
    secret = path_or_none("publish.curve_secret_key", pub.get("curve_secret_key"))
    clients = path_or_none("publish.curve_clients_dir", pub.get("curve_clients_dir"))
    if (secret is None) != (clients is None):
        raise ConfigError(f"{where}.publish: CURVE needs both curve_secret_key and curve_clients_dir")
    publish = PublishSection(endpoint_out, hwm, secret, clients)

    return NodeConfig(
        source=source, rig=rig, anchor=anchor, sync=sync,
        model=path_or_none("model", d.get("model")), engine=engine,
        preprocess=_choice(d.get("preprocess", "cpu"), PREPROCESSORS, f"{where}.preprocess"),
        decode=decode,
        tracker=TrackerConfig.from_dict(d.get("tracker"), f"{where}.tracker"),
        ranging=RangingConfig.from_dict(d.get("ranging"), f"{where}.ranging"),
        hints=HintsConfig.from_dict(d.get("hints"), f"{where}.hints"),
        publish=publish,
        health=HealthConfig.from_dict(d.get("health"), f"{where}.health"),
        record=path_or_none("record", d.get("record")),
    )


def _mapping(value: Any, where: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a mapping, got {type(value).__name__}")
    return value


def _known(d: Mapping, where: str, known: list[str]) -> None:
    for key in d:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(known)})")


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{where}: must be one of {', '.join(allowed)}, got {brief(value)}")
    return value
