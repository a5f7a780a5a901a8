"""Building a node from its configuration: the source, the preprocessor + engine pair, the node, the sinks.

    assembly = assemble(config)          # or assemble(config, engine=...) with an engine already open
    assembly.source, assembly.node, assembly.sinks

The one place that looks at `source.kind`, `engine.kind`, `preprocess` and `publish` / `record`:
perception/node/process.py only runs what this module built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calib.rig import Rig, load_rig
from perception.engine.base import Engine
from perception.engine.stages import DeviceStages, HostStages, Stages
from perception.errors import ConfigError
from perception.io.drive import open_drive
from perception.io.record import RunRecorder
from perception.messaging.curve import CurveClientKeys, CurveServerKeys
from perception.messaging.publisher import Publisher
from perception.node.config import NodeConfig
from perception.node.defaults import default_model
from perception.node.node import Node, remap_tables
from perception.node.sinks import PublisherSink, RecorderSink, Sink
from perception.preprocess import FastPreprocessor
from perception.sources.base import Source
from perception.sources.live import CameraSource, FrameBusSource
from perception.sources.recorded import DriveSource

log = logging.getLogger(__name__)


@dataclass
class Assembly:
    source: Source
    node: Node
    sinks: list[Sink] = field(default_factory=list)
    pipelined: bool = False  # run by the pipelined loop (perception/node/pipeline.py)

    def close(self) -> None:
        self.source.close()
        for sink in self.sinks:
            sink.close()


def assemble(config: NodeConfig, engine: Engine | None = None) -> Assembly:
    """Open everything `config` describes; on any failure what was opened is closed again."""
    source = open_source(config)
    sinks: list[Sink] = []
    try:
        node = build_node(source.rig, config, engine or open_engine(config))
        drive_path = config.source.drive if config.source.kind == "drive" else None
        sinks.extend(open_sinks(config, node.rig, drive_path))
        return Assembly(source, node, sinks, pipelined(config, node.engine))
    except BaseException:
        source.close()
        for sink in sinks:
            sink.close()
        raise


def open_source(config: NodeConfig) -> Source:
    src = config.source
    rig = load_rig(config.rig) if config.rig is not None else None
    if src.kind == "drive":
        if src.drive is None:
            raise ConfigError("source.drive: a drive source needs a drive file (`perception run` fills in "
                              "the demo drive when none is given)")
        source = DriveSource(open_drive(src.drive), src.pacing, src.loop)
        if rig is not None:
            source.rig = rig
        return source
    assert rig is not None  # config validation requires a rig for live sources
    if src.kind == "cameras":
        return CameraSource(rig, src.cameras)
    curve = (None if src.curve_secret_key is None
             else CurveClientKeys(Path(src.curve_secret_key), Path(src.curve_server_key)))
    return FrameBusSource(rig, src.endpoint, curve)


def open_engine(config: NodeConfig) -> Engine:
    model = config.model or str(default_model(config.engine.kind))
    if config.engine.kind == "tensorrt":
        from perception.engine.tensorrt_detector import open_tensorrt

        return open_tensorrt(model)
    if config.engine.kind == "torch":
        try:
            import torch

            from perception.engine.torch import TorchEngine
        except ImportError as e:
            raise ConfigError(f"engine.kind: torch needs PyTorch ({e})") from None
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            log.warning("engine.kind torch: no CUDA device visible; running on the CPU")
        return TorchEngine(model, device=device)
    from perception.engine.onnxruntime import OnnxRuntimeEngine

    return OnnxRuntimeEngine(model, threads=config.engine.threads)


def pipelined(config: NodeConfig, engine: Engine) -> bool:
    """`pipeline` is honoured for host engines fed by the CPU preprocessor: the CUDA paths (pycuda contexts
    are per thread) are not validated across the loop's threads and run one stage after another."""
    return config.pipeline and config.preprocess == "cpu" and not engine.reads_device_batches


def build_node(rig: Rig, config: NodeConfig, engine: Engine) -> Node:
    """The node with one preprocessor + engine pair per batch buffer: two for the pipelined loop (it
    preprocesses frame set k+1 while the engine reads k)."""
    tables = remap_tables([rig[name] for name in rig.names], engine.contract)
    buffers = 2 if pipelined(config, engine) else 1
    if config.pipeline and buffers == 1:
        log.info("pipeline: %s with %s preprocessing runs the sequential loop", engine.name, config.preprocess)
    return Node(rig, config, [open_stages(config.preprocess, engine, tables) for _ in range(buffers)], tables)


def open_stages(preprocess: str, engine: Engine, tables: list) -> Stages:
    """`cuda` when a GPU backend is usable (else the CPU fast path, with a warning). A device-reading engine
    (TensorRT) gets the batch in place, the kernels queued on the engine's own stream; any other engine
    gets the downloaded batch."""
    norm = engine.contract.normalization
    if preprocess == "cuda":
        from kernels.launcher import CudaPreprocessor, available_backend

        backend = available_backend()
        if backend is not None and engine.reads_device_batches:
            # TensorRT runs on a pycuda stream (perception.engine.tensorrt): the kernels share it
            return DeviceStages(CudaPreprocessor(tables, norm, np.float32, backend="pycuda", stream=engine.stream),
                                engine)
        if backend is not None:
            return HostStages(CudaPreprocessor(tables, norm, np.float32, backend=backend), engine)
        log.warning("preprocess: cuda needs an NVIDIA GPU with pycuda or CuPy; using the CPU fast path")
    return HostStages(FastPreprocessor(tables, norm, np.float32), engine)


def open_sinks(config: NodeConfig, rig: Rig, drive_path: str | None = None) -> list[Sink]:
    """The ZeroMQ publisher (unless `publish.endpoint` is null) and the run recorder (when `record` is set)."""
    sinks: list[Sink] = []
    try:
        pub = config.publish
        if pub.endpoint is not None:
            curve = None
            if pub.curve_secret_key is not None:
                curve = CurveServerKeys(Path(pub.curve_secret_key), Path(pub.curve_clients_dir))
            sinks.append(PublisherSink(Publisher(pub.endpoint, sndhwm=pub.sndhwm, curve=curve)))
        if config.record is not None:
            sinks.append(RecorderSink(RunRecorder(config.record, rig, drive_path=drive_path)))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks
