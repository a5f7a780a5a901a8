"""Generate a synthetic drive (MCAP) with exact per-frame ground truth, and cache drives by their parameters.

Everything is a pure function of the configuration: one `numpy.random.SeedSequence(seed)` is split into
independent streams (world, ground texture, frame timing, sensor noise), nothing reads wall time, and
the same configuration gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calib.camera import CameraModel
from calib.defaults import MAX_CAMERAS, default_rig
from calib.rig import Rig, rig_to_yaml_str
from perception.errors import ConfigError
from perception.labels import CLASSES, GroundTruth, GroundTruthBox, GroundTruthObject
from replay.synth.render import CameraView
from replay.synth.scenarios import SCENARIOS
from replay.synth.sensor import Sensor, encode
from replay.synth.texture import build_ground_texture
from replay.synth.world import Snapshot

IMAGE_FORMATS = ("jpeg", "nv12", "bgr8")
DEFAULT_START_NS = 1_700_000_000_000_000_000   # 2023-11-14T22:13:20Z: drives carry plausible epoch times
MAX_SECONDS, MAX_FPS = 600.0, 120.0


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of one synthetic drive; validates itself (ConfigError names the field)."""

    seed: int = 0
    seconds: float = 10.0
    fps: float = 10.0
    num_cameras: int = 3
    scenario: str = "mixed"
    width: int | None = None        # resize every camera (intrinsics scaled); None keeps the rig's size
    height: int | None = None
    image_format: str = "jpeg"
    jpeg_quality: int = 90
    drop_prob: float = 0.0          # chance that a camera frame is lost
    jitter_ms: float = 0.0          # capture times spread uniformly over +-jitter_ms around the tick
    start_ns: int = DEFAULT_START_NS
    rig: Rig | None = field(default=None, compare=False)  # None: calib.defaults.default_rig(num_cameras)

    def __post_init__(self) -> None:
        def fail(name: str, what: str) -> ConfigError:
            return ConfigError(f"synth: {name}: {what}, got {getattr(self, name)!r}")

        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise fail("seed", "must be an integer >= 0")
        if not 0 < self.seconds <= MAX_SECONDS:
            raise fail("seconds", f"must be in (0, {MAX_SECONDS:g}]")
        if not 0 < self.fps <= MAX_FPS:
            raise fail("fps", f"must be in (0, {MAX_FPS:g}]")
        if self.rig is None and not 1 <= self.num_cameras <= MAX_CAMERAS:
            raise fail("num_cameras", f"must be 1..{MAX_CAMERAS}")
        if self.scenario not in SCENARIOS:
            raise fail("scenario", f"must be one of {', '.join(SCENARIOS)}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 32 or value % 2):
                raise fail(name, "must be an even number of pixels >= 32")
        if self.image_format not in IMAGE_FORMATS:
            raise fail("image_format", f"must be one of {', '.join(IMAGE_FORMATS)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise fail("jpeg_quality", "must be 1..100")
        if not 0.0 <= self.drop_prob < 1.0:
            raise fail("drop_prob", "must be in [0, 1)")
        if not 0.0 <= self.jitter_ms < 500.0 / self.fps:
            raise fail("jitter_ms", f"must be >= 0 and below half the frame period ({500.0 / self.fps:g} ms)")
        if self.start_ns < 0:
            raise fail("start_ns", "must be >= 0")

    @property
    def num_frames(self) -> int:
        """Frame ticks per camera (before drops)."""
        return max(1, round(self.seconds * self.fps))

    def cameras(self) -> tuple[CameraModel, ...]:
        rig = self.rig if self.rig is not None else default_rig(self.num_cameras)
        return tuple(resize_camera(c, self.width, self.height) for c in rig.cameras)


def resize_camera(camera: CameraModel, width: int | None, height: int | None) -> CameraModel:
    """The same lens and pose imaged at another resolution (a missing side follows the aspect ratio,
    rounded to even); pixel centres stay at integer coordinates."""
    if width is None and height is None:
        return camera
    if width is None:
        width = 2 * round(camera.width * height / camera.height / 2)
    if height is None:
        height = 2 * round(camera.height * width / camera.width / 2)
    sx, sy = width / camera.width, height / camera.height
    return dataclasses.replace(camera, width=int(width), height=int(height), fx=camera.fx * sx, fy=camera.fy * sy,
                               cx=(camera.cx + 0.5) * sx - 0.5, cy=(camera.cy + 0.5) * sy - 0.5)


@dataclass(frozen=True)
class SynthSummary:
    path: Path
    scenario: str
    seed: int
    cameras: tuple[str, ...]
    frames: dict[str, int]                # frames written per camera
    dropped: dict[str, int]               # frames dropped per camera
    objects: dict[str, int]               # distinct track ids per class that got a box in some frame
    boxes: dict[str, int]                 # 2-D boxes per class over all frames
    duration_s: float                     # first to last capture time
    file_size: int                        # bytes

    def lines(self) -> list[str]:
        cams = ", ".join(f"{c} {self.frames[c]}" + (f" ({self.dropped[c]} dropped)" if self.dropped[c] else "")
                         for c in self.cameras)
        return [
            f"wrote {self.path} ({self.file_size / 2**20:.1f} MiB), scenario {self.scenario}, seed {self.seed}",
            f"duration {self.duration_s:.2f} s; frames per camera: {cams}",
            "objects (boxes): " + ", ".join(f"{c} {self.objects[c]} ({self.boxes[c]})" for c in CLASSES),
        ]


def generate_drive(path: str | Path, config: SynthConfig | None = None, *,
                   progress: Callable[[int, int], None] | None = None, **params: object) -> SynthSummary:
    """Write a synthetic drive to `path`, from a SynthConfig or its fields as keywords (seed, seconds, fps,
    num_cameras, scenario, width, height, image_format, jpeg_quality, drop_prob, jitter_ms, start_ns, rig).
    `progress(done, total)` is called after every frame tick. A failed run leaves no file behind."""
    from perception.io.drive import DriveWriter

    if config is not None and params:
        raise ConfigError("synth: pass either a SynthConfig or its fields, not both")
    config = config or SynthConfig(**params)  # type: ignore[arg-type]
    path = Path(path)
    cameras = config.cameras()
    world_rng, texture_rng, timing_rng, sensor_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(config.seed)).spawn(4))
    world = SCENARIOS[config.scenario](world_rng, config.num_frames / config.fps)
    texture = build_ground_texture(texture_rng)
    views = [CameraView(c, texture) for c in cameras]
    sensors = [Sensor(c.width, c.height, sensor_rng) for c in cameras]
    tally = _Tally(tuple(c.name for c in cameras))
    try:
        with DriveWriter(path, Rig(cameras)) as writer:
            for k in range(config.num_frames):
                tick_ns = config.start_ns + round(k * 1e9 / config.fps)
                writer.write_ego(tick_ns, world.ego.state((tick_ns - config.start_ns) / 1e9).vx)
                captures = []
                for i, camera in enumerate(cameras):
                    t_ns = tick_ns + round(timing_rng.uniform(-1.0, 1.0) * config.jitter_ms * 1e6)
                    if timing_rng.random() < config.drop_prob:
                        tally.dropped[camera.name] += 1
                    else:
                        captures.append((t_ns, i))
                snapshots: dict[int, Snapshot] = {}  # cameras captured at the same instant share one
                for t_ns, i in sorted(captures):
                    if t_ns not in snapshots:
                        snapshots[t_ns] = world.snapshot((t_ns - config.start_ns) / 1e9)
                    snap = snapshots[t_ns]
                    image, seen = views[i].render(world, snap)
                    image = sensors[i].expose(image, world.lighting.gain(snap.t), sensor_rng)
                    gt = ground_truth(cameras[i].name, t_ns, snap, seen)
                    writer.write_frame(cameras[i].name, t_ns, encode(image, config.image_format, config.jpeg_quality))
                    writer.write_ground_truth(gt)
                    tally.add(gt)
                if progress is not None:
                    progress(k + 1, config.num_frames)
    except BaseException:
        path.unlink(missing_ok=True)  # never leave a half-written drive behind
        raise
    return tally.summary(path, config)


@dataclass
class _Tally:
    cameras: tuple[str, ...]
    frames: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    boxes: Counter = field(default_factory=Counter)
    ids: dict[str, set] = field(default_factory=lambda: {c: set() for c in CLASSES})
    times: list[int] = field(default_factory=list)

    def add(self, gt: GroundTruth) -> None:
        self.frames[gt.camera] += 1
        self.times.append(gt.t_ns)
        for b in gt.boxes:
            self.boxes[b.cls] += 1
            self.ids[b.cls].add(b.id)

    def summary(self, path: Path, config: SynthConfig) -> SynthSummary:
        duration = (max(self.times) - min(self.times)) / 1e9 if self.times else 0.0
        return SynthSummary(path, config.scenario, int(config.seed), self.cameras,
                            {c: self.frames[c] for c in self.cameras}, {c: self.dropped[c] for c in self.cameras},
                            {c: len(self.ids[c]) for c in CLASSES}, {c: self.boxes[c] for c in CLASSES},
                            duration, path.stat().st_size)


def ground_truth(camera: str, t_ns: int, snap: Snapshot, seen: dict) -> GroundTruth:
    """Labels of one camera frame: every actor within range, and a box for each one with visible pixels."""
    objects, boxes = [], []
    for actor in snap.actors:
        spec = actor.spec
        objects.append(GroundTruthObject(spec.id, spec.cls, snap.vehicle_position(actor),
                                         snap.relative_velocity(actor), spec.size, actor.yaw))
        pixels = seen.get(spec.id)
        if pixels is not None and pixels.box is not None:
            occlusion = 1.0 - pixels.visible / pixels.own
            boxes.append(GroundTruthBox(spec.id, spec.cls, pixels.box, round(pixels.truncation, 4),
                                        round(occlusion, 4)))
    return GroundTruth(camera, t_ns, tuple(boxes), tuple(objects), snap.ego_speed)


# ---- cache ---------------------------------------------------------------------------------------------
_SOURCES = ("replay.synth.generator", "replay.synth.motion", "replay.synth.render", "replay.synth.scenarios",
            "replay.synth.sensor", "replay.synth.texture", "replay.synth.world", "calib.camera", "calib.defaults",
            "calib.formats", "perception.io.drive", "perception.io.drive_images", "perception.labels", "perception.frame")


def cache_dir() -> Path:
    """$PERCEPTION_CACHE_DIR, else $XDG_CACHE_HOME/perception, else ~/.cache/perception."""
    if os.environ.get("PERCEPTION_CACHE_DIR"):
        return Path(os.environ["PERCEPTION_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "perception"


def _code_fingerprint() -> str:
    """Hash of the sources that shape a drive's bytes, so a cached drive never outlives the code."""
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update(Path(sys.modules[name].__file__ or "").read_bytes())  # imported above (directly or not)
    return digest.hexdigest()


def cached_drive(**params: object) -> Path:
    """Path of the drive for these SynthConfig fields, generated into `cache_dir()/drives/` on first use.
    The file name hashes the parameters and the generator's code; writes are atomic (safe for parallel
    test processes)."""
    import perception.io.drive  # noqa: F401  (its source is part of the fingerprint)

    config = SynthConfig(**params)  # type: ignore[arg-type]
    key = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "rig"}
    key["rig"] = rig_to_yaml_str(config.rig) if config.rig is not None else None
    key["code"] = _code_fingerprint()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = cache_dir() / "drives" / f"{config.scenario}-{digest}.mcap"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            generate_drive(tmp, config)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path
