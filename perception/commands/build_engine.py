"""`perception build-engine MODEL.onnx`: build (or verify) the TensorRT engine for this GPU, then exit.

For CI and vehicle provisioning: the node then starts from the cached plan. The precision is the ONNX's
(see `perception quantize`). Needs TensorRT and pycuda (perception[gpu]).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, metavar="MODEL.onnx")
    parser.add_argument("--cameras", default="1:3:6", metavar="MIN:OPT:MAX",
                        help="camera-count optimisation profile, or one fixed count (default 1:3:6)")
    parser.add_argument("--cache-dir", type=Path, help="engine cache (default ~/.cache/perception/engines)")
    parser.add_argument("--plan", type=Path, metavar="FILE.plan", help="write the plan here instead of the cache")
    parser.add_argument("--workspace-mib", type=int, default=1024, help="builder memory pool limit (MiB)")
    parser.add_argument("--opt-level", type=int, default=3, help="builder optimisation level 0..5 (default 3)")
    parser.add_argument("--force", action="store_true", help="rebuild even when a valid plan exists")
    parser.add_argument("--no-build", action="store_true", help="only check that a valid plan exists (exit 2 if not)")


def run(args: argparse.Namespace) -> int:
    from perception.engine.tensorrt import TensorRTEngine
    from perception.engine.trt_cache import camera_profile_from_arg

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    profile = camera_profile_from_arg(args.cameras)
    if args.force:
        _invalidate(args, profile)
    engine = TensorRTEngine(args.model, profile=profile, cache_dir=args.cache_dir, plan_path=args.plan,
                            allow_build=not args.no_build, workspace_mib=args.workspace_mib,
                            optimization_level=args.opt_level, progress=progress)
    what = "built" if engine.built else "up to date"
    print(f"{engine.plan_path}: {what} ({engine.contract.model_id}, {engine.precision}, "
          f"{engine.key.platform.gpu_name} sm{''.join(map(str, engine.key.platform.compute_capability))}, "
          f"TensorRT {engine.key.platform.trt_version}, cameras {profile.min}..{profile.max})")
    return 0


def _invalidate(args: argparse.Namespace, profile) -> None:
    """--force: drop the plan the engine would load (computed without building)."""
    import hashlib

    from perception.contract import load_model
    from perception.engine.tensorrt import import_gpu, current_platform
    from perception.engine.trt_cache import BuildSettings, EngineCache, EngineKey
    from perception.precision.metadata import read_precision

    loaded = load_model(args.model)
    trt, cuda = import_gpu()
    settings = BuildSettings(read_precision(args.model).precision, profile, args.workspace_mib, args.opt_level)
    key = EngineKey(loaded.contract.model_id, hashlib.sha256(loaded.data).hexdigest(), current_platform(trt, cuda), settings)
    EngineCache(args.cache_dir).invalidate(key, args.plan)
