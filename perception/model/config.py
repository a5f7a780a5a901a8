"""Model hyper-parameters: one plain, self-validating object saved with every checkpoint (no torch here)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from perception.contract import CONTRACT_VERSION, HEAD_LAYOUT, ModelContract, head_specs
from perception.errors import ConfigError
from perception.labels import CLASSES


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network and of its temporal state.

    The network sees `window` frames per camera: the current image plus `window - 1` past feature maps
    kept as state. A stored frame older than `max_age_s` is masked out (as after a reset).
    """

    classes: tuple[str, ...] = CLASSES
    input_height: int = 256
    input_width: int = 448
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)   # RGB, applied to values in [0, 1]
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    stride: int = 8
    backbone: str = "resnet"                                    # "resnet" | "yolox-nano" (network.py)
    backbone_channels: tuple[int, ...] = (16, 32, 48, 96)       # "resnet": at strides 2, 4, 8, 16
    yolox_activation: str = "silu"                              # "yolox-nano": "silu" (the teacher's) | "relu"
    feature_channels: int = 32                                  # per-frame features kept in the state
    head_channels: int = 48
    window: int = 3                                             # K: frames fused (current + K-1 stored)
    max_age_s: float = 0.5
    depth_focal_px: float = 400.0                               # F: log_depth = ln(z * F / fx), see docs/model.md

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "backbone_channels", tuple(int(v) for v in self.backbone_channels))
        problems = []
        if not self.classes or len(set(self.classes)) != len(self.classes):
            problems.append(f"classes must be a non-empty list of distinct names, got {list(self.classes)}")
        if self.stride not in (8, 16):
            problems.append(f"stride must be 8 or 16, got {self.stride}")
        if self.backbone not in ("resnet", "yolox-nano"):
            problems.append(f"backbone must be 'resnet' or 'yolox-nano', got {self.backbone!r}")
        if self.backbone == "yolox-nano" and (self.stride != 8 or self.input_height % 32 or self.input_width % 32):
            problems.append("backbone 'yolox-nano' needs stride 8 and an input size in multiples of 32")
        if self.yolox_activation not in ("silu", "relu"):
            problems.append(f"yolox_activation must be 'silu' or 'relu', got {self.yolox_activation!r}")
        if len(self.backbone_channels) != 4 or min(self.backbone_channels) <= 0:
            problems.append(f"backbone_channels must be 4 positive widths, got {list(self.backbone_channels)}")
        for name in ("input_height", "input_width"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0 or v % 16:
                problems.append(f"{name} must be a positive multiple of 16, got {v!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            problems.append(f"mean/std must be 3 values each with std > 0, got {self.mean} / {self.std}")
        if self.feature_channels <= 0 or self.head_channels <= 0:
            problems.append("feature_channels and head_channels must be positive")
        if not isinstance(self.window, int) or self.window < 2:
            problems.append(f"window must be an integer >= 2 (current frame + history), got {self.window!r}")
        if not (math.isfinite(self.max_age_s) and self.max_age_s > 0):
            problems.append(f"max_age_s must be a positive number of seconds, got {self.max_age_s}")
        if not (math.isfinite(self.depth_focal_px) and self.depth_focal_px > 0):
            problems.append(f"depth_focal_px must be a positive number of pixels, got {self.depth_focal_px}")
        if problems:
            raise ConfigError("model config: " + "; ".join(problems))

    @property
    def feature_height(self) -> int:
        return self.input_height // self.stride

    @property
    def feature_width(self) -> int:
        return self.input_width // self.stride

    @property
    def state_shape(self) -> tuple[int, int, int, int]:
        """Per-camera shape of the stored features: [window-1, feature_channels, h, w]."""
        return (self.window - 1, self.feature_channels, self.feature_height, self.feature_width)

    def contract(self, model_id: str, graph_sha256: str) -> ModelContract:
        """The contract a network of this shape exports with (perception/contract.py)."""
        return ModelContract(
            version=CONTRACT_VERSION, model_id=model_id, graph_sha256=graph_sha256, head_layout=HEAD_LAYOUT,
            classes=self.classes, input_height=self.input_height, input_width=self.input_width,
            color_order="RGB", mean=self.mean, std=self.std, stride=self.stride, window=self.window,
            state_shape=self.state_shape, max_age_s=self.max_age_s, depth_focal_px=self.depth_focal_px,
            heads=head_specs(len(self.classes)))

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @staticmethod
    def from_dict(d: object, where: str = "model config") -> "ModelConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
        known = {f.name: f for f in fields(ModelConfig)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")
        try:
            return ModelConfig(**d)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {e}") from None
