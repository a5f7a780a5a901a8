"""Everything around the TensorRT calls that is plain Python: engine cache keys and invalidation, the
engine I/O contract check, device-state buffer rotation, CUDA-graph keys, ONNX Runtime GPU provider
options. perception/engine/tensorrt.py is the thin layer that makes the TensorRT / CUDA calls.

Cache layout (one directory, default ~/.cache/perception/engines):
    <model_id>.<precision>.<key digest 16>.plan    the serialized engine
    <same>.json                                   its EngineKey + sha256 + size of the plan
    timing-<trt version>-<gpu>-sm<cc>.cache       TensorRT timing cache, shared by every model
A plan is used only when its sidecar names exactly the key wanted (ONNX file hash, TensorRT version, GPU
name and compute capability, precision, camera profile, builder settings) and the plan's bytes hash to
what the sidecar says; anything else is a miss with a reason, and the caller rebuilds (or, build-only
forbidden, raises EngineBuildError with that reason).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.contract import ModelContract
from perception.engine.base import EngineInputError
from perception.errors import ConfigError, ModelContractError, PerceptionError

CACHE_FORMAT = 1
MAX_PLAN_BYTES = 1 << 30
MAX_SIDECAR_BYTES = 64 * 1024
STATE_INPUT, STATE_OUTPUT = "state_features", "state_features_out"
DEVICE_ONLY_OUTPUTS = (STATE_OUTPUT,)   # never copied to the host in the steady state


class EngineBuildError(PerceptionError):
    """A TensorRT engine cannot be built, loaded or used (the message says which model and why)."""


def default_cache_dir() -> Path:
    """$PERCEPTION_ENGINE_CACHE, else $XDG_CACHE_HOME/perception/engines, else ~/.cache/perception/engines."""
    if os.environ.get("PERCEPTION_ENGINE_CACHE"):
        return Path(os.environ["PERCEPTION_ENGINE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "perception" / "engines"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class CameraProfile:
    """TensorRT optimisation profile of the camera (batch) dimension: min <= opt <= max cameras."""

    min: int = 1
    opt: int = 3
    max: int = 6

    def __post_init__(self) -> None:
        if not (isinstance(self.min, int) and isinstance(self.opt, int) and isinstance(self.max, int)
                and 1 <= self.min <= self.opt <= self.max):
            raise ConfigError(f"camera profile must satisfy 1 <= min <= opt <= max, got "
                              f"min={self.min} opt={self.opt} max={self.max}")

    def shapes(self, contract: ModelContract) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Input name -> (min, opt, max) shapes for `IOptimizationProfile.set_shape`."""
        inputs, _ = contract.expected_io()
        return {name: tuple((n,) + tuple(shape[1:]) for n in (self.min, self.opt, self.max))
                for name, shape in inputs.items()}

    def check(self, num_cameras: int, where: str) -> None:
        if not self.min <= num_cameras <= self.max:
            raise EngineInputError(f"{where}: {num_cameras} cameras is outside the engine's profile "
                                   f"[{self.min}, {self.max}] (rebuild with a wider --cameras range)")


@dataclass(frozen=True)
class BuildSettings:
    precision: str                      # as recorded in the ONNX (perception.precision), informational
    profile: CameraProfile = CameraProfile()
    workspace_mib: int = 1024           # memory pool limit for tactics
    optimization_level: int = 3         # builder_optimization_level, 0..5

    def __post_init__(self) -> None:
        if self.workspace_mib < 16:
            raise ConfigError(f"workspace_mib must be >= 16, got {self.workspace_mib}")
        if not 0 <= self.optimization_level <= 5:
            raise ConfigError(f"optimization_level must be 0..5, got {self.optimization_level}")


@dataclass(frozen=True)
class Platform:
    """What a serialized plan is tied to."""

    trt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]

    @property
    def tag(self) -> str:
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu_name).strip("-").lower()
        return f"{self.trt_version}-{gpu}-sm{self.compute_capability[0]}{self.compute_capability[1]}"


@dataclass(frozen=True)
class EngineKey:
    model_id: str
    onnx_sha256: str
    platform: Platform
    settings: BuildSettings
    format: int = CACHE_FORMAT

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))   # tuples -> lists, as read back

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def file_stem(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", self.model_id)[:80]
        return f"{safe}.{self.settings.precision}.{self.digest[:16]}"

    def differences(self, other: dict) -> list[str]:
        """Fields where the dict form `other` (a sidecar's key) differs from this key, dotted."""
        out: list[str] = []

        def walk(a: object, b: object, path: str) -> None:
            if isinstance(a, dict) and isinstance(b, dict):
                for k in sorted(set(a) | set(b)):
                    walk(a.get(k), b.get(k), f"{path}.{k}" if path else k)
            elif a != b:
                out.append(f"{path}: wanted {a!r}, plan has {b!r}")
        walk(self.to_dict(), other, "")
        return out


@dataclass(frozen=True)
class CacheLookup:
    plan: bytes | None
    reason: str          # why there is no usable plan ("" when plan is not None)
    path: Path


class EngineCache:
    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def plan_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.file_stem}.plan"

    def timing_cache_path(self, platform: Platform) -> Path:
        return self.root / f"timing-{platform.tag}.cache"

    def lookup(self, key: EngineKey, plan_path: str | os.PathLike | None = None) -> CacheLookup:
        """The plan for `key` from the cache (or from an explicit `plan_path` with its .json sidecar)."""
        path = Path(plan_path) if plan_path is not None else self.plan_path(key)
        sidecar = path.with_suffix(".json")
        if not path.exists():
            return CacheLookup(None, f"no engine built yet for this key ({path.name})", path)
        try:
            raw = sidecar.read_bytes()[:MAX_SIDECAR_BYTES + 1]
        except OSError as e:
            return CacheLookup(None, f"{sidecar}: cannot read the plan's sidecar ({e.strerror})", path)
        if len(raw) > MAX_SIDECAR_BYTES:
            return CacheLookup(None, f"{sidecar}: sidecar larger than {MAX_SIDECAR_BYTES} bytes", path)
        try:
            meta = json.loads(raw)
            stored_key, want_sha, want_size = meta["key"], str(meta["plan_sha256"]), int(meta["plan_bytes"])
        except (ValueError, KeyError, TypeError) as e:
            return CacheLookup(None, f"{sidecar}: corrupt sidecar ({type(e).__name__}: {e})", path)
        diffs = key.differences(stored_key) if isinstance(stored_key, dict) else ["key: not an object"]
        if diffs:
            return CacheLookup(None, f"{path.name} was built for another configuration: " + "; ".join(diffs), path)
        size = path.stat().st_size
        if size != want_size or size > MAX_PLAN_BYTES:
            return CacheLookup(None, f"{path}: corrupt plan (size {size} bytes, sidecar says {want_size})", path)
        plan = path.read_bytes()
        if hashlib.sha256(plan).hexdigest() != want_sha:
            return CacheLookup(None, f"{path}: corrupt plan (sha256 differs from its sidecar)", path)
        return CacheLookup(plan, "", path)

    def store(self, key: EngineKey, plan: bytes, plan_path: str | os.PathLike | None = None) -> Path:
        path = Path(plan_path) if plan_path is not None else self.plan_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"key": key.to_dict(), "plan_sha256": hashlib.sha256(plan).hexdigest(), "plan_bytes": len(plan)}
        _atomic_write(path, bytes(plan))
        _atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=1, sort_keys=True).encode())
        return path

    def invalidate(self, key: EngineKey, plan_path: str | os.PathLike | None = None) -> None:
        path = Path(plan_path) if plan_path is not None else self.plan_path(key)
        path.with_suffix(".json").unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    def read_timing_cache(self, platform: Platform) -> bytes:
        try:
            return self.timing_cache_path(platform).read_bytes()
        except FileNotFoundError:
            return b""

    def write_timing_cache(self, platform: Platform, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.timing_cache_path(platform), bytes(data))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def obtain_plan(cache: EngineCache, key: EngineKey, build: Callable[[], bytes], deserialize: Callable[[bytes], object],
                *, allow_build: bool = True, plan_path: str | os.PathLike | None = None,
                progress: Callable[[str], None] = lambda _: None) -> tuple[object, bool]:
    """(deserialized engine, whether it was built now). A cached plan that fails to deserialize is
    treated like a missing one; a freshly built plan that fails is an error."""
    found = cache.lookup(key, plan_path)
    if found.plan is not None:
        engine = deserialize(found.plan)
        if engine is not None:
            return engine, False
        reason = f"{found.path}: corrupt plan (TensorRT could not deserialize it)"
    else:
        reason = found.reason
    if not allow_build:
        raise EngineBuildError(f"model {key.model_id}: {reason}; building is disabled (--no-build): run "
                               f"`perception build-engine` for this model, precision and GPU first")
    progress(f"building TensorRT engine for {key.model_id} ({key.settings.precision}): {reason}")
    plan = build()
    engine = deserialize(plan)
    if engine is None:
        raise EngineBuildError(f"model {key.model_id}: TensorRT could not deserialize the plan it just built")
    cache.store(key, plan, plan_path)
    return engine, True


# ---- engine I/O against the model contract ---------------------------------------------------------------

@dataclass(frozen=True)
class TensorSpec:
    """One I/O tensor of a built engine, as TensorRT reports it (-1 = dynamic)."""

    name: str
    is_input: bool
    dtype: str                 # numpy dtype name
    shape: tuple[int, ...]


def check_engine_io(specs: Iterable[TensorSpec], contract: ModelContract, where: str) -> None:
    """The engine's tensors are exactly the contract's, float32, with the contract's per-camera shapes."""
    specs = list(specs)
    want_in, want_out = contract.expected_io()
    have = {s.name: s for s in specs}
    problems = []
    for is_input, want in ((True, want_in), (False, want_out)):
        kind = "input" if is_input else "output"
        for name, shape in want.items():
            s = have.get(name)
            if s is None:
                problems.append(f"missing {kind} {name!r}")
                continue
            if s.is_input != is_input:
                problems.append(f"{name!r} is an {'input' if s.is_input else 'output'}, the contract says {kind}")
            if s.dtype != "float32":
                problems.append(f"{kind} {name!r} is {s.dtype}, the contract says float32")
            if len(s.shape) != len(shape) or any(w is not None and h != w for h, w in zip(s.shape, shape)) \
                    or (s.shape and s.shape[0] not in (-1,)):
                problems.append(f"{kind} {name!r} has shape {list(s.shape)}, the contract says "
                                f"{['N' if d is None else d for d in shape]} with a dynamic camera dimension")
    extra = sorted(set(have) - set(want_in) - set(want_out))
    if extra:
        problems.append(f"unexpected tensors {extra}")
    if problems:
        raise ModelContractError(f"{where}: engine does not match the model contract: " + "; ".join(problems))


def io_shapes(contract: ModelContract, num_cameras: int) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Concrete input and output shapes for `num_cameras` (buffer allocation)."""
    ins, outs = contract.expected_io()
    concrete = lambda d: {k: (num_cameras,) + tuple(v[1:]) for k, v in d.items()}  # noqa: E731
    return concrete(ins), concrete(outs)


def host_outputs(contract: ModelContract) -> list[str]:
    """Outputs copied back every step (the heads and the ages); the feature state stays on the device."""
    _, outs = contract.expected_io()
    return [name for name in outs if name not in DEVICE_ONLY_OUTPUTS]


# ---- temporal state kept on the device ----------------------------------------------------------------

class DeviceState:
    """What `EngineState.features` holds for a device-resident engine: a reference to the feature state in
    one of the engine's two device buffers, valid until the engine's next step. It supports what
    `EngineState.reset` does (copy, then zero whole cameras); the zeroing is applied on the device when
    the state is next used. np.asarray(handle) downloads it (tests, debugging)."""

    dtype = np.dtype(np.float32)

    def __init__(self, ring: "StateRing", generation: int, zeroed: frozenset[int] = frozenset()) -> None:
        self._ring, self.generation, self.zeroed = ring, generation, zeroed

    @property
    def shape(self) -> tuple[int, ...]:
        return self._ring.shape

    def copy(self) -> "DeviceState":
        return DeviceState(self._ring, self.generation, self.zeroed)

    def __setitem__(self, index: object, value: object) -> None:
        if not np.all(np.asarray(value) == 0):
            raise EngineInputError("device-resident state: cameras can only be reset (set to 0)")
        cams = np.arange(self.shape[0])[index]   # same indexing rules as the numpy array it stands for
        self.zeroed = self.zeroed | frozenset(int(c) for c in np.atleast_1d(cams))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._ring.download(self)
        out[sorted(self.zeroed)] = 0.0
        return out if dtype is None else out.astype(dtype)

    def belongs_to(self, ring: "StateRing") -> bool:
        return self._ring is ring


@dataclass(frozen=True)
class StatePlan:
    """What the engine does with its two state buffers for one step."""

    read: int                      # buffer bound to `state_features`
    write: int                     # buffer bound to `state_features_out`
    upload: np.ndarray | None      # host state to copy into `read` first (a fresh or a host state)
    zero_cameras: tuple[int, ...]  # cameras to zero in `read` first (resets)


class StateRing:
    """Two device buffers alternate as state input and output; no host round-trip in the steady state.

    `plan(features)` decides the buffer roles for a step from the state object the caller passes: the
    handle the engine returned last step (use in place), or a numpy array (upload it: the initial state
    or a state from elsewhere). A handle from an earlier step is refused: its buffer has been rewritten.
    `commit(plan)` after the step makes the written buffer the live one and returns its handle.
    """

    def __init__(self, shape: tuple[int, ...], download: Callable[[int], np.ndarray]) -> None:
        self.shape = tuple(shape)
        self._download = download   # buffer index -> host copy of that buffer's contents
        self.generation = 0
        self.live = 0               # buffer holding the newest state

    def plan(self, features: object) -> StatePlan:
        if isinstance(features, DeviceState):
            if not features.belongs_to(self):
                raise EngineInputError("state_features: this state belongs to another engine (or another camera "
                                       "count); start from engine.initial_state()")
            if features.generation != self.generation:
                raise EngineInputError(f"state_features: stale device state (step {features.generation}, the engine "
                                       f"is at step {self.generation}); only the newest state can be continued")
            return StatePlan(self.live, 1 - self.live, None, tuple(sorted(features.zeroed)))
        host = np.asarray(features)
        if host.shape != self.shape or host.dtype != np.float32:
            raise EngineInputError(f"state_features must be float32 {list(self.shape)}, got {host.dtype} {list(host.shape)}")
        return StatePlan(self.live, 1 - self.live, np.ascontiguousarray(host), ())

    def commit(self, plan: StatePlan) -> DeviceState:
        self.live = plan.write
        self.generation += 1
        return DeviceState(self, self.generation)

    def download(self, handle: DeviceState) -> np.ndarray:
        if handle.generation != self.generation:
            raise EngineInputError("state_features: stale device state can no longer be read")
        return np.array(self._download(self.live), dtype=np.float32).reshape(self.shape)


def graph_key(num_cameras: int, plan: StatePlan, image_address: int) -> tuple[int, int, int, int]:
    """CUDA graphs replay fixed addresses: one captured graph per (cameras, state buffer roles, image buffer)."""
    return (num_cameras, plan.read, plan.write, image_address)


# ---- ONNX Runtime GPU execution providers ------------------------------------------------------------

def ort_gpu_providers(contract: ModelContract, cache_dir: str | os.PathLike, *, route: str = "tensorrt",
                      profile: CameraProfile = CameraProfile(), device_id: int = 0, workspace_mib: int = 1024,
                      optimization_level: int = 3, cuda_graph: bool = False) -> list[tuple[str, dict[str, str]]]:
    """`providers` for onnxruntime.InferenceSession: TensorRT EP (engine + timing cache in `cache_dir`,
    explicit camera profile; precision comes from the ONNX: strongly typed) falling back to the CUDA EP,
    then the CPU; or route="cuda" for CUDA EP + CPU."""
    if route not in ("tensorrt", "cuda"):
        raise ConfigError(f"ORT GPU route must be 'tensorrt' or 'cuda', got {route!r}")
    cuda = ("CUDAExecutionProvider", {"device_id": str(device_id), "cudnn_conv_algo_search": "EXHAUSTIVE",
                                      "do_copy_in_default_stream": "1", "enable_cuda_graph": "1" if cuda_graph else "0"})
    cpu = ("CPUExecutionProvider", {})
    if route == "cuda":
        return [cuda, cpu]
    shapes = profile.shapes(contract)

    def fmt(i: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in dims[i])}" for name, dims in shapes.items())
    trt = ("TensorrtExecutionProvider", {
        "device_id": str(device_id),
        "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(Path(cache_dir) / "ort-trt"),
        "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(Path(cache_dir) / "ort-trt"),
        "trt_max_workspace_size": str(workspace_mib << 20),
        "trt_builder_optimization_level": str(optimization_level),
        "trt_profile_min_shapes": fmt(0), "trt_profile_opt_shapes": fmt(1), "trt_profile_max_shapes": fmt(2),
        "trt_cuda_graph_enable": "True" if cuda_graph else "False",
    })
    return [trt, cuda, cpu]


def camera_profile_from_arg(text: str) -> CameraProfile:
    """'3' -> 3..3..3; '1:3:6' -> min 1, opt 3, max 6."""
    parts = text.split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--cameras must be N or MIN:OPT:MAX, got {text!r}") from None
    if len(nums) == 1:
        return CameraProfile(nums[0], nums[0], nums[0])
    if len(nums) != 3:
        raise ConfigError(f"--cameras must be N or MIN:OPT:MAX, got {text!r}")
    return CameraProfile(*nums)

