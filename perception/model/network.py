"""The streaming temporal CenterNet: per-frame backbone, causal fusion over stored features, heads.

One call = one frame per camera (batch N = cameras). The history of the last `window - 1` fresh frames is
explicit state, so each frame costs exactly one backbone pass:

    inputs   images [N,3,H,W]  state_features [N,K-1,C,h,w]  state_ages [N,K-1]  dt [N]  fresh [N]
    outputs  heatmap [N,classes,h,w]  size [N,2,h,w]  offset [N,2,h,w]  velocity [N,2,h,w]
             log_depth [N,1,h,w]  velocity_valid [N]  state_features_out  state_ages_out

Time handling (docs/model.md): `dt` is the time since this camera's previous call (s). Stored ages grow by
`dt`; slots older than `max_age_s` (and all slots after a reset, whose age is EMPTY_AGE) are masked.
`fresh = 0` marks a stale camera (no new image this step): its image is ignored by the state update, the
stored features are held and only their ages advance, so a repeated frame never enters the history. The
velocity head regresses the displacement since the newest stored frame and divides it by that frame's
age, which makes it exact for any frame spacing, dropped frames included.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from perception.contract import INPUTS
from perception.model.config import ModelConfig

EMPTY_AGE = 1.0e4   # seconds; the age of a slot that holds no frame (reset state), never reached by real data
MIN_AGE = 1.0e-3    # seconds; floor for the velocity division
INPUT_NAMES = INPUTS
OUTPUT_NAMES = ("heatmap", "size", "offset", "velocity", "log_depth", "velocity_valid",
                "state_features_out", "state_ages_out")


def _conv(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.conv2(self.conv1(x)))


class Backbone(nn.Module):
    """Image [N,3,H,W] -> features [N,C,H/stride,W/stride] (stride 8: stride-16 context upsampled in)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c1, c2, c3, c4 = cfg.backbone_channels
        self.stride = cfg.stride
        self.stem = nn.Sequential(_conv(3, c1, 2), _conv(c1, c2, 2))           # stride 4
        self.stage8 = nn.Sequential(_conv(c2, c3, 2), _Residual(c3))           # stride 8
        self.stage16 = nn.Sequential(_conv(c3, c4, 2), _Residual(c4), _Residual(c4))  # stride 16
        c = cfg.feature_channels
        self.lateral16 = nn.Conv2d(c4, c, 1)
        self.lateral8 = nn.Conv2d(c3, c, 1) if cfg.stride == 8 else None
        self.out = _conv(c, c)

    def forward(self, images: Tensor) -> Tensor:
        x8 = self.stage8(self.stem(images))
        x16 = self.lateral16(self.stage16(x8))
        if self.lateral8 is not None:
            x16 = nn.functional.interpolate(x16, scale_factor=2.0, mode="nearest") + self.lateral8(x8)
        return self.out(x16)


# the YOLOX backbone's activation (ModelConfig.yolox_activation): the teacher's SiLU, or ReLU, which ONNX Runtime
# and TensorRT fuse into the convolution before it (SiLU runs as a pass of its own: ~a fifth of the engine time)
ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU}


def _base_conv(cin: int, cout: int, act: type[nn.Module], k: int = 1, stride: int = 1,
               groups: int = 1) -> nn.Sequential:
    """YOLOX's BaseConv as exported (batch norm folded into the conv's bias), then `act`."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=True), act())


def _dw_conv(cin: int, cout: int, act: type[nn.Module], stride: int = 1) -> nn.Sequential:
    return nn.Sequential(_base_conv(cin, cin, act, 3, stride, groups=cin), _base_conv(cin, cout, act))


class _CSP(nn.Module):
    """YOLOX CSPLayer (depthwise); submodules registered in the order the exported graph runs them."""

    def __init__(self, cin: int, cout: int, n: int, act: type[nn.Module], shortcut: bool = True) -> None:
        super().__init__()
        hidden = cout // 2
        self.conv1, self.conv2 = _base_conv(cin, hidden, act), _base_conv(cin, hidden, act)
        self.m = nn.ModuleList(nn.Sequential(_base_conv(hidden, hidden, act), _dw_conv(hidden, hidden, act))
                               for _ in range(n))
        self.conv3 = _base_conv(2 * hidden, cout, act)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.conv1(x), self.conv2(x)
        for block in self.m:
            a = a + block(a) if self.shortcut else block(a)
        return self.conv3(torch.cat([a, b], 1))


class _SPP(nn.Module):
    def __init__(self, cin: int, cout: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.conv1, self.conv2 = _base_conv(cin, cin // 2, act), _base_conv(cin // 2 * 4, cout, act)

    def forward(self, x: Tensor) -> Tensor:
        # YOLOX's parallel 5 / 9 / 13 max pools as a cascade of 5x5 ones (as YOLOv5's SPPF): the same maxima
        # (pool9 = pool5 o pool5, pool13 = pool5 o pool5 o pool5 with -inf padding), fewer comparisons
        pools = [self.conv1(x)]
        for _ in range(3):
            pools.append(nn.functional.max_pool2d(pools[-1], 5, 1, 2))
        return self.conv2(torch.cat(pools, 1))


class _FocusStem(nn.Module):
    """YOLOX's Focus stem (BGR 0-255 pixels -> space-to-depth -> 3x3 convolution, then `act`) on the node's
    normalised RGB x, as one 6x6 stride-2 convolution of x + mean / std (= the teacher's pixels / (255 std)):
    the channel flip, the pixel scale and the space-to-depth fold into its weights
    (yolox.fold_focus_stem), and its zero padding is the teacher's black. Exact, and one elementwise pass and
    one convolution instead of a flip, an affine, four slices and a concatenation on the full-resolution
    image (docs/model.md, "Latency")."""

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float],
                 act: type[nn.Module] = nn.SiLU) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 6, 2, 2, bias=True)
        self.act = act()
        self.register_buffer("shift", torch.tensor(mean).reshape(1, 3, 1, 1) / torch.tensor(std).reshape(1, 3, 1, 1),
                             persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.act(self.conv(images + self.shift))


class YoloxNanoBackbone(nn.Module):
    """YOLOX-Nano's CSPDarknet + the PAFPN's top-down path + the stride-8 head's stem and cls / reg towers
    (perception/model/yolox.py loads the teacher's weights), then a 1x1 projection to the stored features.

    The node feeds RGB normalised with the contract's mean / std; YOLOX was trained on BGR 0-255 through a
    Focus stem (space-to-depth, then a 3x3 convolution): one 6x6 stride-2 convolution on the node's input
    here (_FocusStem).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        act = ACTIVATIONS[cfg.yolox_activation]
        self.input_std = cfg.std                                                   # what the stem folds in
        self.stem = _FocusStem(cfg.mean, cfg.std, act)
        self.dark2 = nn.Sequential(_dw_conv(16, 32, act, 2), _CSP(32, 32, 1, act))
        self.dark3 = nn.Sequential(_dw_conv(32, 64, act, 2), _CSP(64, 64, 3, act))
        self.dark4 = nn.Sequential(_dw_conv(64, 128, act, 2), _CSP(128, 128, 3, act))
        self.dark5 = nn.Sequential(_dw_conv(128, 256, act, 2), _SPP(256, 256, act),
                                   _CSP(256, 256, 1, act, shortcut=False))
        self.lateral0 = _base_conv(256, 128, act)
        self.c3_p4 = _CSP(256, 128, 1, act, shortcut=False)
        self.reduce1 = _base_conv(128, 64, act)
        self.c3_p3 = _CSP(128, 64, 1, act, shortcut=False)
        self.head_stem = _base_conv(64, 64, act)
        self.cls_tower = nn.Sequential(_dw_conv(64, 64, act), _dw_conv(64, 64, act))
        self.reg_tower = nn.Sequential(_dw_conv(64, 64, act), _dw_conv(64, 64, act))
        self.project = _conv(128, cfg.feature_channels, k=1)

    def pretrained_convs(self) -> list[nn.Conv2d]:
        """The convolutions that come from the teacher, in the exported graph's order."""
        return [m for name, m in self.named_modules() if isinstance(m, nn.Conv2d) and not name.startswith("project")]

    def forward(self, images: Tensor) -> Tensor:
        x3 = self.dark3(self.dark2(self.stem(images)))
        x4 = self.dark4(x3)
        x5 = self.dark5(x4)
        up = lambda t: nn.functional.interpolate(t, scale_factor=2.0, mode="nearest")  # noqa: E731
        f0 = self.lateral0(x5)
        f1 = self.reduce1(self.c3_p4(torch.cat([up(f0), x4], 1)))
        p3 = self.head_stem(self.c3_p3(torch.cat([up(f1), x3], 1)))
        return self.project(torch.cat([self.cls_tower(p3), self.reg_tower(p3)], 1))


BACKBONES = {"resnet": Backbone, "yolox-nano": YoloxNanoBackbone}


class TemporalCenterNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = BACKBONES[cfg.backbone](cfg)
        k1, c, h = cfg.window - 1, cfg.feature_channels, cfg.head_channels
        # input: current features, K-1 masked stored features, and per slot (valid, valid * age) planes
        self.fusion = nn.Sequential(_conv(c * cfg.window + 2 * k1, h, k=1), _Residual(h))
        self.head_trunk = _conv(h, h)
        n_cls = len(cfg.classes)
        self.head_out = nn.Conv2d(h, n_cls + 7, 1)
        nn.init.constant_(self.head_out.bias[:n_cls], -4.6)   # CenterNet prior: sigmoid(-4.6) ~ 0.01
        nn.init.zeros_(self.head_out.bias[n_cls:])

    # -- shared pieces of the streaming and the windowed computation ------------------------------
    def _heads(self, current: Tensor, history: Tensor, ages: Tensor) -> dict[str, Tensor]:
        """current [N,C,h,w]; history [N,K-1,C,h,w] (newest first); ages [N,K-1] relative to now."""
        n, k1, c, fh, fw = history.shape
        valid = (ages <= self.cfg.max_age_s).to(current.dtype)                  # [N,K-1]
        hist = (history * valid[:, :, None, None, None]).reshape(n, k1 * c, fh, fw)
        planes = torch.cat([valid, valid * ages], 1)[:, :, None, None].expand(n, 2 * k1, fh, fw)
        x = self.head_trunk(self.fusion(torch.cat([current, hist, planes], 1)))
        out = self.head_out(x)
        n_cls = len(self.cfg.classes)
        displacement = out[:, n_cls + 4:n_cls + 6]
        gap = torch.clamp(ages[:, :1], min=MIN_AGE)[:, :, None, None]
        log_size = out[:, n_cls:n_cls + 2]   # log(size / stride)
        return {
            "heatmap": torch.sigmoid(out[:, :n_cls]),
            "size": torch.exp(torch.clamp(log_size, -6.0, 8.0)) * float(self.cfg.stride),
            "offset": out[:, n_cls + 2:n_cls + 4],
            "velocity": displacement * float(self.cfg.stride) * valid[:, :1, None, None] / gap,
            "log_depth": out[:, n_cls + 6:n_cls + 7],
            "velocity_valid": valid[:, 0],
            "displacement": displacement,   # training only: cells moved since the newest stored frame
            "log_size": log_size,           # training only
        }

    # -- streaming: one frame per camera -------------------------------------------------------
    def forward(self, images: Tensor, state_features: Tensor, state_ages: Tensor, dt: Tensor,
                fresh: Tensor) -> tuple[Tensor, ...]:
        current = self.backbone(images)
        ages = torch.clamp(state_ages + dt[:, None], max=EMPTY_AGE)
        heads = self._heads(current, state_features, ages)
        shifted_features = torch.cat([current[:, None], state_features[:, :-1]], 1)
        shifted_ages = torch.cat([torch.zeros_like(ages[:, :1]), ages[:, :-1]], 1)
        keep = fresh > 0.5
        features_out = torch.where(keep[:, None, None, None, None], shifted_features, state_features)
        ages_out = torch.where(keep[:, None], shifted_ages, ages)
        return tuple(heads[name] for name in OUTPUT_NAMES[:6]) + (features_out, ages_out)

    def initial_state(self, n: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        features = torch.zeros((n,) + self.cfg.state_shape, device=device)
        ages = torch.full((n, self.cfg.window - 1), EMPTY_AGE, device=device)
        return features, ages

    # -- offline: a whole clip at once (training, and the reference the stream must equal) --------
    def forward_clip(self, clip: Tensor, dt: Tensor, fresh: Tensor) -> list[dict[str, Tensor]]:
        """clip [N,T,3,H,W], dt / fresh [N,T] -> heads at every step, starting from a reset state.

        All T backbone passes run as one batch; each step's history is gathered from the features of the
        last K-1 fresh earlier steps, with ages accumulated from `dt` in the same float32 order as the
        stream. Per-camera bookkeeping uses plain Python lists, so this is an independent reference for
        the state logic in `forward`.
        """
        n, t = clip.shape[:2]
        feats = self.backbone(clip.reshape((n * t,) + clip.shape[2:]))
        feats = feats.reshape((n, t) + feats.shape[1:])     # any input width: training uses crops
        k1 = self.cfg.window - 1
        empty = torch.zeros(feats.shape[2:], dtype=feats.dtype, device=feats.device)
        slots: list[list[int]] = [[] for _ in range(n)]           # indices of stored steps, newest first
        ages = torch.full((n, k1), EMPTY_AGE, dtype=feats.dtype, device=feats.device)
        results = []
        for step in range(t):
            ages = torch.clamp(ages + dt[:, step:step + 1], max=EMPTY_AGE)
            history = torch.stack([
                torch.stack([feats[i, j] for j in slots[i]] + [empty] * (k1 - len(slots[i]))) for i in range(n)])
            results.append(self._heads(feats[:, step], history, ages))
            new_ages = []
            for i in range(n):
                if fresh[i, step] > 0.5:
                    slots[i] = ([step] + slots[i])[:k1]
                    new_ages.append(torch.cat([ages.new_zeros(1), ages[i, :-1]]))
                else:
                    new_ages.append(ages[i])
            ages = torch.stack(new_ages)
        return results


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: TemporalCenterNet, n: int = 1) -> int:
    """Multiply-accumulates of one streaming step for `n` cameras (convolutions only, the rest is noise)."""
    total = 0

    def hook(mod: nn.Conv2d, _inp: tuple, out: Tensor) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total += out.numel() * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        cfg = model.cfg
        with torch.no_grad():
            feats, ages = model.initial_state(n)
            model(torch.zeros(n, 3, cfg.input_height, cfg.input_width), feats, ages, torch.zeros(n), torch.ones(n))
    finally:
        for h in handles:
            h.remove()
    return total
