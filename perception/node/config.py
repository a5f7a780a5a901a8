"""The node's configuration: one YAML file, validated at load; every error names the key and the reason.

    source:   {kind: drive, drive: null, pacing: realtime, loop: false}  # drive | cameras | framebus
    rig: null                 # rig YAML; null = the drive's own rig (required for cameras / framebus)
    sync:     {anchor: null, max_skew_ms: 20}   # anchor null = the rig's first camera
    model: null               # ONNX file; null = the bundled demo model (its INT8 copy on onnxruntime)
    engine:   {kind: onnxruntime, threads: 1}   # onnxruntime | tensorrt | torch
    preprocess: cpu           # cpu | cuda
    pipeline: true            # the pipelined loop (perception/node/pipeline.py), stages on three threads
    decode:   {score_threshold: 0.3, nms_iou: 0.5}  # score_threshold: a number or {class: number}
    tracker:  {...}  ranging: {...}  hints: {...}   # perception.track / perception.hints configs
    publish:  {endpoint: tcp://127.0.0.1:7450, sndhwm: 64, curve_secret_key: null, curve_clients_dir: null}
    health:   {rate_hz: 2, lag_drop_ratio: 0.2, lost_after_s: 1.0, window_s: 5.0}
    record: null              # MCAP file to record the outputs into
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perception.config_base import ConfigBase, param, section
from perception.errors import ConfigError
from perception.hints.config import HintsConfig
from perception.messaging.services import DEFAULT_ENDPOINT
from perception.track.config import TrackerConfig
from perception.track.ranging import RangingConfig
from perception.yaml_io import load_yaml

PACINGS = ("realtime", "fast", "lockstep")
SOURCE_KINDS = ("drive", "cameras", "framebus")
ENGINES = ("onnxruntime", "tensorrt", "torch")
PREPROCESSORS = ("cpu", "cuda")
ENDPOINT_SCHEMES = ("tcp://", "ipc://", "inproc://")
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class SourceConfig(ConfigBase):
    """Where the frames come from."""

    kind: str = param("drive", "drive (a recorded drive), cameras (OpenCV / GStreamer) or framebus (ZeroMQ)",
                      choices=SOURCE_KINDS)
    drive: str | None = param(None, "the drive file; null = the bundled demo drive, generated on first use",
                              path=True)
    pacing: str = param("realtime", "recorded drives: realtime, fast or lockstep (perception/sources/recorded.py)",
                        choices=PACINGS)
    loop: bool = param(False, "start a recorded drive over when it ends")
    cameras: dict[str, str] = param({}, "kind cameras: camera name -> OpenCV source spec")
    endpoint: str | None = param(None, "kind framebus: the frame bus endpoint, e.g. tcp://127.0.0.1:7460")
    curve_secret_key: str | None = param(None, "kind framebus: the node's CURVE secret key file (zmq.auth format)",
                                         path=True)
    curve_server_key: str | None = param(None, "kind framebus: the frame bus publisher's CURVE public key file",
                                         path=True)
    first_frame_timeout_s: float = param(10.0, "the node exits with an error when no frame set arrives within this "
                                         "time of starting (0 = wait for ever)", unit="s", ge=0.0)

    def check(self) -> None:
        if self.kind == "cameras" and not self.cameras:
            raise self.invalid("cameras", "kind 'cameras' needs at least one camera")
        if self.kind == "framebus" and self.endpoint is None:
            raise self.invalid("endpoint", "kind 'framebus' needs an endpoint like tcp://127.0.0.1:7460")
        if (self.curve_secret_key is None) != (self.curve_server_key is None):
            raise self.invalid("curve_secret_key", "CURVE needs both curve_secret_key and curve_server_key")


@dataclass(frozen=True)
class SyncSection(ConfigBase):
    """Frame-set assembly."""

    anchor: str | None = param(None, "the camera whose frames start a frame set; null = the rig's first")
    max_skew_ms: float = param(20.0, "other cameras join the anchor's frame set within this skew", unit="ms",
                               ge=0.0, lt=1000.0)


@dataclass(frozen=True)
class EngineSection(ConfigBase):
    """The inference engine."""

    kind: str = param("onnxruntime", "onnxruntime, tensorrt, or torch (CUDA when torch sees a GPU: machines "
                                     "without TensorRT or ONNX Runtime GPU; exported temporal models only)",
                      choices=ENGINES)
    threads: int | None = param(1, "ONNX Runtime intra-op threads; null = one per physical core. 1 leaves the "
                                   "other cores to the pipelined loop's preprocessing and decode / track "
                                   "(2-core figures: benchmarks/RESULTS.md)", ge=1)


@dataclass(frozen=True)
class DecodeSection(ConfigBase):
    """Turning the network's heads into boxes."""

    score_threshold: float | dict[str, float] = param(0.3, "minimum score: one number or {class: number}",
                                                      gt=0.0, le=1.0)
    nms_iou: float = param(0.5, "boxes of a class overlapping more than this are suppressed", gt=0.0, le=1.0)


@dataclass(frozen=True)
class PublishSection(ConfigBase):
    """The ZeroMQ publisher."""

    endpoint: str | None = param(DEFAULT_ENDPOINT, "PUB endpoint (tcp://, ipc://, inproc://); null = no socket")
    sndhwm: int = param(64, "messages queued per subscriber before new ones are dropped", ge=1)
    curve_secret_key: str | None = param(None, "CURVE server secret key file (zmq.auth format)", path=True)
    curve_clients_dir: str | None = param(None, "directory of authorised clients' public key files", path=True)

    def check(self) -> None:
        if self.endpoint is not None and not self.endpoint.startswith(ENDPOINT_SCHEMES):
            raise self.invalid("endpoint", f"must be a tcp://, ipc:// or inproc:// endpoint, got {self.endpoint!r}")
        if (self.curve_secret_key is None) != (self.curve_clients_dir is None):
            raise self.invalid("curve_secret_key", "CURVE needs both curve_secret_key and curve_clients_dir")
@dataclass(frozen=True)
class HealthConfig(ConfigBase):
    rate_hz: float = param(2.0, "health messages per second (of frame-set time; wall time when no frames come)",
                           unit="Hz", gt=0.0, le=100.0)
    lag_drop_ratio: float = param(0.2, "degraded when more than this share of captured frames is dropped",
                                  gt=0.0, lt=1.0)
    lost_after_s: float = param(1.0, "a camera without frames this long is lost; a lost anchor hands over to the "
                                "next camera (fault when every camera is lost)", unit="s", gt=0.0)
    exit_after_s: float = param(0.0, "live sources: exit with an error after this long without any frame set "
                                "(0 = never)", unit="s", ge=0.0)
    window_s: float = param(5.0, "window of the latency percentiles and drop ratio", unit="s", gt=0.0)


@dataclass(frozen=True)
class NodeConfig(ConfigBase):
    source: SourceConfig = section(SourceConfig)
    rig: str | None = param(None, "rig YAML; null = the drive's own rig (required for cameras / framebus)",
                            path=True)
    sync: SyncSection = section(SyncSection)
    model: str | None = param(None, "ONNX model; null = the bundled demo model (on onnxruntime its INT8 copy, "
                                    "kept by the build only within 1 point of mAP: docs/model.md)", path=True)
    engine: EngineSection = section(EngineSection)
    preprocess: str = param("cpu", "cpu or cuda (the GPU kernels; the CPU fast path when no GPU is usable)",
                            choices=PREPROCESSORS)
    pipeline: bool = param(True, "run preprocessing, the engine and decode / track / publish of consecutive "
                           "frame sets on three threads (same outputs; host engines with cpu preprocessing only, "
                           "the others run the sequential loop); pays off with cores to spare beyond "
                           "engine.threads (benchmarks/RESULTS.md)")
    decode: DecodeSection = section(DecodeSection)
    tracker: TrackerConfig = section(TrackerConfig)
    ranging: RangingConfig = section(RangingConfig)
    hints: HintsConfig = section(HintsConfig)
    publish: PublishSection = section(PublishSection)
    health: HealthConfig = section(HealthConfig)
    record: str | None = param(None, "MCAP run file to record the outputs into", path=True)

    def check(self) -> None:
        if self.source.kind != "drive" and self.rig is None:
            raise self.invalid("rig", f"a rig calibration file is needed for source kind {self.source.kind!r}")


def load_config(path: str | Path | None) -> NodeConfig:
    """Read and validate a node YAML file; None gives the defaults (the embedded demo)."""
    if path is None:
        return NodeConfig()
    p = Path(path)
    data = load_yaml(p, MAX_CONFIG_BYTES, ConfigError)
    return config_from_dict(data, str(p), base_dir=p.parent)


def config_from_dict(data: Any, where: str, base_dir: Path | None = None) -> NodeConfig:
    """Validate a parsed configuration; relative file paths are resolved against `base_dir`."""
    return NodeConfig.from_dict(data, where, base_dir)
