"""Training data from drive files with ground truth: cached network-input frames, labelled clips.

Frames go through the node's own preprocessing (calib.remap table + perception.preprocess.FastPreprocessor,
letterbox), once, into a uint8 cache (~/.cache/perception/frames, one memory-mapped array per drive and
camera, see default_cache_dir; normalisation is applied when a clip is drawn, so the cache differs from the node's input only by
rounding to 8 bits). Ground-truth boxes (source pixels)
go through the same table into network pixels (perception.model.targets). A box is *ignored* (neither
positive nor negative in training) when it breaks the label rules: too short in
network pixels, too occluded or truncated, or mostly outside the part of the image the network sees (wide
lenses lose their periphery to the distortion-free network camera). Training uses looser rules than the
evaluation protocol's moderate level (perception/eval: >= 25 px of a 1242-px-wide image), so the network
also learns from small objects that the metrics leave out. Depth labels: the object centre's
depth z along the camera's optical axis, normalised to the reference focal length (ln(z * F / fx)); a box
without an object has none. Zooming a clip by s scales fx by s, so its depth labels move by -ln(s). The
decoder turns depth into range through the box centre's viewing ray and the camera's extrinsics.

No torch here: batches are numpy arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from calib.remap import RemapTable, build_remap
from perception.errors import DriveError
from perception.labels import GroundTruth
from perception.model.config import ModelConfig
from perception.model.targets import NetBox, render_targets, source_boxes_to_net

CACHE_VERSION = 1
MIN_DEPTH_M = 0.5     # objects whose centre is nearer than this along the optical axis get no depth label


@dataclass(frozen=True)
class LabelRules:
    min_height_px: float        # network pixels
    max_occlusion: float
    max_truncation: float
    min_visible: float          # share of the box inside what the network sees


TRAIN_RULES = LabelRules(min_height_px=6.0, max_occlusion=0.7, max_truncation=0.7, min_visible=0.5)


def is_ignored(boxes: Sequence, table: RemapTable, rules: LabelRules) -> np.ndarray:
    """[len(boxes)] bool for GroundTruthBox-es of one camera frame."""
    if not boxes:
        return np.zeros(0, bool)
    net, visible = source_boxes_to_net(np.array([b.box for b in boxes], np.float64), table, with_visibility=True)
    occ = np.array([b.occlusion for b in boxes])
    trunc = np.array([b.truncation for b in boxes])
    with np.errstate(invalid="ignore"):
        short = ~(net[:, 3] - net[:, 1] >= rules.min_height_px)
    return short | (occ > rules.max_occlusion) | (trunc > rules.max_truncation) | (visible < rules.min_visible)


def default_cache_dir() -> Path:
    """$PERCEPTION_CACHE_DIR, else $XDG_CACHE_HOME/perception, else ~/.cache/perception; then /frames."""
    if os.environ.get("PERCEPTION_CACHE_DIR"):
        return Path(os.environ["PERCEPTION_CACHE_DIR"]) / "frames"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "perception" / "frames"


@dataclass
class CameraSequence:
    """One camera of one drive: its frames in network pixels and their labels."""

    drive: str
    camera: str
    table: RemapTable
    images: np.ndarray                 # [F,H,W,3] uint8 RGB, the preprocessed network input before normalising
    t_ns: np.ndarray                   # [F] int64
    labels: list[GroundTruth]          # [F] source-pixel ground truth
    objects: list[list[NetBox]] = field(default_factory=list)   # [F] network-pixel labels

    def __len__(self) -> int:
        return int(self.t_ns.shape[0])


def net_objects(gt: GroundTruth, table: RemapTable, classes: Sequence[str], depth_focal_px: float,
                rules: LabelRules = TRAIN_RULES) -> list[NetBox]:
    """Ground truth of one frame -> network-pixel boxes with ignore flags and depth labels:
    ln(z * depth_focal_px / fx), z = the object centre's depth along the camera's optical axis."""
    boxes = [b for b in gt.boxes if b.cls in classes]
    if not boxes:
        return []
    net = source_boxes_to_net(np.array([b.box for b in boxes], np.float64), table)
    ignored = is_ignored(boxes, table, rules)
    camera_from_vehicle = np.linalg.inv(table.net_camera.T_vehicle_camera)
    depths = {o.id: float((camera_from_vehicle @ np.array([*o.position, 1.0]))[2]) for o in gt.objects}
    focal = np.log(depth_focal_px / table.net_camera.fx)
    out = []
    for b, box, ignore in zip(boxes, net, ignored):
        z = depths.get(b.id)
        out.append(NetBox(list(classes).index(b.cls), box, b.id,
                          float(np.log(z) + focal) if z is not None and z > MIN_DEPTH_M else float("nan"), bool(ignore)))
    return out


def load_sequences(drive_path: str | os.PathLike, cfg: ModelConfig, cache_dir: Path | None = None,
                   cameras: Sequence[str] | None = None, progress: bool = False) -> list[CameraSequence]:
    """Every camera of a drive with ground truth, preprocessed (cached) and labelled."""
    from perception.io.drive import DriveReader

    path = Path(drive_path).resolve()
    cache_dir = cache_dir or default_cache_dir()
    with DriveReader(path) as reader:
        names = tuple(cameras) if cameras is not None else reader.cameras
        sequences = []
        for camera in names:
            table = build_remap(reader.rig[camera], cfg.input_width, cfg.input_height, "letterbox")
            labels = list(reader.ground_truth(camera))
            if not labels:
                raise DriveError(f"{path}: camera {camera!r} has no ground truth: cannot train or evaluate on it")
            key = _cache_key(path, camera, cfg)
            images, t_ns = _load_cached(cache_dir / key, len(labels))
            if images is None:
                images, t_ns = _preprocess_camera(reader, camera, table, cache_dir / key, progress)
            by_time = {gt.t_ns: gt for gt in labels}
            missing = [t for t in t_ns.tolist() if t not in by_time]
            if missing:
                raise DriveError(f"{path}: camera {camera!r}: {len(missing)} frames have no ground truth "
                                 f"(first at {missing[0]} ns)")
            ordered = [by_time[t] for t in t_ns.tolist()]
            seq = CameraSequence(str(path), camera, table, images, t_ns, ordered)
            seq.objects = [net_objects(gt, table, cfg.classes, cfg.depth_focal_px) for gt in ordered]
            sequences.append(seq)
    return sequences


def _cache_key(path: Path, camera: str, cfg: ModelConfig) -> str:
    st = path.stat()
    text = f"{path}|{st.st_size}|{st.st_mtime_ns}|{camera}|{cfg.input_width}x{cfg.input_height}|letterbox|v{CACHE_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _load_cached(folder: Path, n_labels: int) -> tuple[np.ndarray | None, np.ndarray]:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        images = np.load(folder / "images.npy", mmap_mode="r")
        t_ns = np.asarray(meta["t_ns"], np.int64)
    except (OSError, ValueError, KeyError):
        return None, np.zeros(0, np.int64)
    if images.shape[0] != t_ns.shape[0]:
        return None, np.zeros(0, np.int64)
    return images, t_ns


def _preprocess_camera(reader, camera: str, table: RemapTable, folder: Path,
                       progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Run the node's preprocessing (without normalisation) over one camera; write the cache."""
    from tqdm import tqdm

    from perception.preprocess import FastPreprocessor, Normalization

    identity = Normalization(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))
    pre = FastPreprocessor([table], identity)
    frames, times = [], []
    it = reader.frames([camera])
    for cf in tqdm(it, desc=f"preprocess {camera}", unit="frame", disable=not progress, leave=False):
        out = pre.run([cf.frame])[0]                                        # [3,H,W] values 0..255
        frames.append(np.clip(np.rint(out.transpose(1, 2, 0)), 0, 255).astype(np.uint8))
        times.append(cf.t_ns)
    if not frames:
        raise DriveError(f"{reader.path}: camera {camera!r} has no frames")
    images = np.stack(frames)
    t_ns = np.asarray(times, np.int64)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "images.tmp.npy"
    np.save(tmp, images)
    os.replace(tmp, folder / "images.npy")
    (folder / "meta.json").write_text(json.dumps({"t_ns": t_ns.tolist(), "camera": camera,
                                                  "drive": str(reader.path), "version": CACHE_VERSION}))
    return images, t_ns


def normalise(rgb: np.ndarray, valid: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """[H,W,3] RGB in 0..255 -> float32 [H,W,3] normalised as the node does (docs/preprocess.md), with
    0.0 (the pad value) where the remap table samples nothing."""
    x = (np.asarray(rgb, np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    x[~valid] = 0.0
    return x


@dataclass(frozen=True)
class Augmentation:
    """Per-clip random changes; every frame of a clip gets the same ones."""

    flip_p: float = 0.5
    zoom: tuple[float, float] = (0.75, 2.0)      # about the network camera's principal point (log-uniform)
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    noise_std: float = 0.01                       # in [0, 1] intensity units
    drop_p: float = 0.1                           # a step skips a source frame (dropped frame)
    stale_p: float = 0.05                         # a step repeats no image (stale camera, not supervised)

    @staticmethod
    def none() -> "Augmentation":
        return Augmentation(0.0, (1.0, 1.0), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass
class ClipBatch:
    images: np.ndarray          # [B,T,3,H,Wc] float32
    dt: np.ndarray              # [B,T] float32 seconds (0 at the first step)
    fresh: np.ndarray           # [B,T] float32
    heatmap: np.ndarray         # [B,T,C,h,w]
    heatmap_weight: np.ndarray  # [B,T,h,w]
    regression: np.ndarray      # [B,T,7,h,w]
    masks: np.ndarray           # [B,T,3,h,w]


class ClipSampler:
    """Random labelled clips of `clip_length` steps of one camera, cropped to `crop_width` columns (the
    network is fully convolutional; full height keeps the vertical position cue for range)."""

    def __init__(self, sequences: list[CameraSequence], cfg: ModelConfig, clip_length: int,
                 augmentation: Augmentation, crop_width: int | None = None) -> None:
        self.sequences = [s for s in sequences if len(s) >= clip_length * 2]
        if not self.sequences:
            raise DriveError(f"no camera sequence has the {clip_length * 2} frames a clip needs")
        self.cfg, self.t, self.aug = cfg, clip_length, augmentation
        self.crop_width = crop_width or cfg.input_width
        if self.crop_width % cfg.stride or self.crop_width > cfg.input_width:
            raise ValueError(f"crop width {self.crop_width} must be a multiple of the stride <= the input width")
        weights = np.array([len(s) for s in self.sequences], np.float64)
        self._pick = weights / weights.sum()

    def batch(self, rng: np.random.Generator, size: int) -> ClipBatch:
        clips = [self.clip(rng) for _ in range(size)]
        return ClipBatch(*(np.stack([getattr(c, f) for c in clips]) for f in ClipBatch.__dataclass_fields__))

    def clip(self, rng: np.random.Generator) -> ClipBatch:
        cfg, aug = self.cfg, self.aug
        seq = self.sequences[int(rng.choice(len(self.sequences), p=self._pick))]
        # frame indices: a step normally advances one frame, a dropped frame two
        gaps = np.where(rng.random(self.t - 1) < aug.drop_p, 2, 1)
        start = int(rng.integers(0, len(seq) - int(gaps.sum())))
        index = np.concatenate([[start], start + np.cumsum(gaps)])
        fresh = np.ones(self.t, bool)
        fresh[1:] = rng.random(self.t - 1) >= aug.stale_p
        dt = np.zeros(self.t, np.float32)
        dt[1:] = np.diff(seq.t_ns[index]) * 1e-9
        # one geometric + photometric draw for the whole clip
        W, H = cfg.input_width, cfg.input_height
        s = float(np.exp(rng.uniform(np.log(aug.zoom[0]), np.log(aug.zoom[1]))))
        flip = rng.random() < aug.flip_p
        cx, cy = seq.table.net_camera.cx, seq.table.net_camera.cy
        affine = np.array([[s, 0.0, cx - s * cx], [0.0, s, cy - s * cy]])
        if flip:
            affine = np.array([[-1.0, 0.0, W - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([affine, [0, 0, 1]])
        x0 = int(rng.integers(0, (W - self.crop_width) // cfg.stride + 1)) * cfg.stride
        affine[0, 2] -= x0
        photo = _photometric_draw(rng, aug)

        images, objects = [], []
        for step, i in enumerate(index):
            if not fresh[step]:          # stale camera: nothing new arrives; the network ignores the image
                images.append(images[-1] if images else np.zeros((3, H, self.crop_width), np.float32))
                objects.append([])
                continue
            rgb = _photometric(seq.images[i].astype(np.float32), photo, rng, aug.noise_std)
            warped = cv2.warpAffine(normalise(rgb, seq.table.valid, cfg.mean, cfg.std), affine, (self.crop_width, H), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0, 0.0, 0.0))
            images.append(np.ascontiguousarray(warped.transpose(2, 0, 1)))
            objects.append(_transform_objects(seq.objects[i], affine, flip, s, self.crop_width, H))
        h, w = cfg.feature_height, self.crop_width // cfg.stride
        targets = []
        last_fresh, age = None, np.inf
        for step in range(self.t):
            age += dt[step]
            previous = None
            if last_fresh is not None and age <= cfg.max_age_s:
                previous = {o.track_id: (o.box[:2] + o.box[2:]) / 2 for o in objects[last_fresh]}
            targets.append(render_targets(objects[step], previous, len(cfg.classes), (h, w), cfg.stride))
            if fresh[step]:
                last_fresh, age = step, 0.0
        supervised = fresh.astype(np.float32)
        return ClipBatch(
            np.stack(images), dt, fresh.astype(np.float32),
            np.stack([t.heatmap for t in targets]),
            np.stack([t.heatmap_weight for t in targets]) * supervised[:, None, None],
            np.stack([t.regression for t in targets]),
            np.stack([t.masks for t in targets]) * supervised[:, None, None, None])


def _transform_objects(objs: list[NetBox], affine: np.ndarray, flip: bool, zoom: float, width: int,
                       height: int) -> list[NetBox]:
    out = []
    for o in objs:
        corners = np.array([[o.box[0], o.box[1], 1.0], [o.box[2], o.box[3], 1.0]]) @ affine.T
        x0, x1 = sorted(corners[:, 0])
        y0, y1 = sorted(corners[:, 1])
        full = (x1 - x0) * (y1 - y0)
        cx0, cy0, cx1, cy1 = max(x0, -0.5), max(y0, -0.5), min(x1, width - 0.5), min(y1, height - 0.5)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        visible = (cx1 - cx0) * (cy1 - cy0) / full
        box = np.array([cx0, cy0, cx1, cy1])
        ignore = o.ignore or visible < TRAIN_RULES.min_visible or (cy1 - cy0) < TRAIN_RULES.min_height_px
        out.append(NetBox(o.cls, box, o.track_id, o.log_depth - float(np.log(zoom)), ignore))
    return out


def _photometric_draw(rng: np.random.Generator, aug: Augmentation) -> tuple[float, float, float]:
    return (1.0 + rng.uniform(-aug.brightness, aug.brightness), 1.0 + rng.uniform(-aug.contrast, aug.contrast),
            1.0 + rng.uniform(-aug.saturation, aug.saturation))


def _photometric(rgb: np.ndarray, draw: tuple[float, float, float], rng: np.random.Generator,
                 noise_std: float) -> np.ndarray:
    """rgb [H,W,3] 0..255 float -> jittered (brightness, contrast about the mean, saturation, noise)."""
    brightness, contrast, saturation = draw
    if (brightness, contrast, saturation) != (1.0, 1.0, 1.0):
        grey = rgb.mean(axis=2, keepdims=True)
        rgb = grey + (rgb - grey) * saturation
        rgb = (rgb - rgb.mean()) * contrast + rgb.mean()
        rgb = rgb * brightness
    if noise_std > 0:
        rgb = rgb + rng.normal(0.0, noise_std * 255.0, rgb.shape).astype(np.float32)
    return np.clip(rgb, 0.0, 255.0)
