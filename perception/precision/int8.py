"""INT8 by explicit quantization: Q/DQ nodes from ONNX Runtime's static quantizer, calibrated on drives.

The Q/DQ model runs on ONNX Runtime CPU (which fuses DQ -> Conv -> Q into integer kernels) and is what
TensorRT 11 builds an INT8 engine from (strongly typed: the Q/DQ nodes carry the precision). Defaults
per-channel weights.

Two flavours (`target`): "tensorrt" (signed int8, symmetric: what TensorRT accepts; also runs on ONNX
Runtime CPU, but its x86 kernels are slow for signed activations) and "cpu" (unsigned asymmetric
activations, signed weights: ONNX Runtime's fast x86 path; TensorRT cannot build it).

Only the image-feature data flow is quantized (perception.precision.graph): the time bookkeeping
(ages, dt, fresh) and the head post-processing (sigmoid, exp, division: not in QUANTIZED_OPS) stay float,
and so do the last convolutions (the head outputs): quantized logits take 256 levels, and the heatmap's
flat plateaus then become runs of tied "peaks" for the 3x3 peak test. Nodes reading time values (the
age planes concatenated into the fusion input, and the fusion convolution) stay float too: one int8
scale set by the feature range would erase the ages. A stem with an unfolded activation (SiLU: YOLOX's Focus
stem on 0-255 pixels) stays float with the convolutions reading it (graph.float_stem, docs/tensorrt.md).
A SiLU (Sigmoid + Mul) after a quantized convolution is quantized too, so ONNX Runtime runs it as
QLinearSigmoid / QLinearMul instead of a DQ -> float SiLU -> Q per layer; the heads' sigmoid and other Muls
stay float. Relu / Add / Resize are quantized when every data input comes from a quantized node: the input
normalisation in front of a float stem stays float (quantizing it only rounded the pixels).

Mixed precision (`min_macs`): only convolutions with at least that many multiply-accumulates per output
value (input channels per group x kernel area) are quantized, with their activations. On ONNX Runtime x86
an int8 layer pays a uint8 SiLU (two table / integer passes, ~3x the fused float QuickGelu) and, at each
float / int8 border, Q or DQ plus an NCHWc <-> NHWC reorder; its convolution is faster than float only when
the reduction is deep. Per-layer profile of the demo student (docs/tensorrt.md): 1x1 convolutions on >= 128
channels and the 3x3 fusion convolutions were faster as int8 layers, depthwise and narrow ones 2x slower.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from perception.contract import ModelContract
from perception.errors import ConfigError, ModelContractError
from perception.model_card import ModelCard, load_any_model
from perception.precision.graph import (FEATURE_INPUTS, conv_macs, elem_types, feature_nodes, float_stem,
                                        output_nodes, silu_pairs, time_valued_tensors)
from perception.precision.metadata import PrecisionInfo, finish_converted, precision_of

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "percentile"
DEFAULT_PERCENTILE = 99.9999   # chosen on a validation drive (docs/tensorrt.md)
FOLLOWER_OPS = ("Relu", "Add", "Resize")   # quantized when fed by quantized nodes only (Relu: folded into the Conv)
QUANTIZED_OPS = ("Conv",) + FOLLOWER_OPS + ("Sigmoid", "Mul")  # Sigmoid / Mul only as a SiLU (graph.silu_pairs)
TARGETS = ("tensorrt", "cpu")
HISTOGRAM_BINS = 2048          # entropy / percentile histograms (TensorRT's entropy calibrator: 2048)
ENTROPY_QUANTIZED_BINS = 128   # candidate thresholds start at 128 of 2048 bins
CHUNK = 8                      # calibration samples whose activations are held at once


class SampleReader:
    """onnxruntime CalibrationDataReader over a list of graph-input dicts (rewindable)."""

    def __init__(self, samples: Sequence[dict[str, np.ndarray]]) -> None:
        if not samples:
            raise ConfigError("calibration: no samples")
        self._samples = list(samples)
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._samples):
            return None
        self._next += 1
        return self._samples[self._next - 1]

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self._samples)


MIN_OPSET = 13


def quantize_int8(source: str | os.PathLike, out: str | os.PathLike, samples: Sequence[dict[str, np.ndarray]],
                  method: str = DEFAULT_METHOD, *, percentile: float = DEFAULT_PERCENTILE,
                  target: str = "tensorrt", per_channel: bool = True, histogram_bins: int = HISTOGRAM_BINS,
                  min_macs: int = 0, details: dict | None = None) -> ModelContract:
    """Quantize the float32 model file `source` with calibration `samples` (graph-input dicts, see
    perception.precision.calibration) and write the Q/DQ model to `out`. `histogram_bins`: resolution of
    the entropy / percentile histograms (entropy's search time grows with its square). `min_macs`: quantize
    only convolutions with at least that many multiply-accumulates per output value (0: all of them)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise ConfigError(f"quantize: method must be one of {', '.join(METHODS)}, got {method!r}")
    if target not in TARGETS:
        raise ConfigError(f"quantize: target must be one of {', '.join(TARGETS)}, got {target!r}")
    symmetric = target == "tensorrt"
    if histogram_bins < 2 * ENTROPY_QUANTIZED_BINS:
        raise ConfigError(f"quantize: histogram_bins must be >= {2 * ENTROPY_QUANTIZED_BINS}, got {histogram_bins}")
    if not 50.0 < percentile <= 100.0:
        raise ConfigError(f"quantize: percentile must be in (50, 100], got {percentile}")
    if min_macs < 0:
        raise ConfigError(f"quantize: min_macs must be >= 0, got {min_macs}")
    loaded = load_any_model(source)  # an exported model or a plug-in detector (model card)
    model = onnx.load_model_from_string(loaded.data)
    origin = precision_of(model, str(source))
    if origin.precision != "fp32":
        raise ModelContractError(f"{source}: is already {origin.precision}; quantize the float32 export")
    _check_samples(samples, loaded.contract)
    if _default_opset(model) < MIN_OPSET:  # per-channel Q/DQ (their `axis`) needs opset 13; YOLOX exports 11
        model = onnx.version_converter.convert_version(model, MIN_OPSET)

    types = elem_types(model)
    heads = {n.name for n in output_nodes(model, "Conv")}
    feature_inputs = (loaded.contract.input_name,) if loaded.contract.stateless else FEATURE_INPUTS
    timed = time_valued_tensors(model, types, feature_inputs)
    stem = float_stem(model, types, feature_inputs[0])
    macs = conv_macs(model)
    convs = {n.name for n in feature_nodes(model, types, feature_inputs) if n.op_type == "Conv"
             and n.name not in heads | stem and not any(i in timed for i in n.input) and macs.get(n.name, 0) >= min_macs}
    if min_macs and not convs:
        raise ConfigError(f"quantize: no convolution to quantize (min_macs {min_macs}; the deepest has "
                          f"{max(macs.values(), default=0)} multiply-accumulates per output value)")
    quantized = _with_followers(model, convs, timed)
    exclude = [n.name for n in model.graph.node if n.name not in quantized]

    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    with tempfile.TemporaryDirectory(prefix="perception-quantize-") as tmp:
        ranges = _calibrate(model, samples, calibrate, symmetric, percentile, histogram_bins, Path(tmp))
        raw = Path(tmp) / "model.int8.onnx"
        quantize_static(model, raw, None, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
                        nodes_to_exclude=exclude, per_channel=per_channel,
                        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=calibrate, extra_options=extra, calibration_cache_path=ranges)
        result = onnx.load_model(str(raw))
    info = PrecisionInfo("int8", origin.source_graph_sha256, method, {
        "percentile": percentile if method == "percentile" else None, "target": target,
        "histogram_bins": histogram_bins if method != "minmax" else None,
        "per_channel": per_channel, "min_macs": min_macs, "quantized_nodes": sorted(quantized), **(details or {})})
    return finish_converted(result, loaded.contract, info, out)


def _with_followers(model: onnx.ModelProto, convs: set[str], timed: set[str]) -> set[str]:
    """`convs` with the SiLU pairs reading them and the FOLLOWER_OPS nodes whose every data input (not a
    weight, constant or graph input) comes from a quantized node and none is time-valued."""
    constants = {t.name for t in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n.name for n in model.graph.node for o in n.output}
    silu = {sigmoid.name: (sigmoid, mul) for sigmoid, mul in silu_pairs(model)}
    quantized = set(convs)
    for node in model.graph.node:  # topological order: a node's producers are decided before it
        if node.name in silu and producer.get(node.input[0]) in quantized:
            quantized |= {n.name for n in silu[node.name]}
        elif node.op_type in FOLLOWER_OPS:
            data = [i for i in node.input if i and i not in constants]
            if data and all(producer.get(i) in quantized and i not in timed for i in data):
                quantized.add(node.name)
    return quantized


def _calibrate(model: onnx.ModelProto, samples: Sequence[dict[str, np.ndarray]], method, symmetric: bool,
               percentile: float, bins: int, work: Path) -> Path:
    """Activation ranges as an ONNX Runtime calibration cache (JSON) for `quantize_static`.

    Run here rather than inside quantize_static for two reasons: quantize_static gives the entropy
    calibrator 128 histogram bins for 128 quantized bins, so its KL search has a single candidate (the
    full range: identical to minmax); TensorRT's entropy calibration uses 2048 bins, as here. And samples
    go in chunks, so histogram calibration holds CHUNK samples' activations at a time, not all of them.
    """
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    class _Reader(SampleReader, CalibrationDataReader):
        pass

    options: dict = {"symmetric": symmetric}
    if method == CalibrationMethod.Entropy:
        options |= {"num_bins": bins, "num_quantized_bins": ENTROPY_QUANTIZED_BINS}
    elif method == CalibrationMethod.Percentile:
        options |= {"num_bins": bins, "percentile": percentile}
    source = work / "model.fp32.onnx"
    onnx.save_model(model, str(source))
    calibrator = create_calibrator(source, list(QUANTIZED_OPS), augmented_model_path=str(work / "augmented.onnx"),
                                   calibrate_method=method, extra_options=options)
    for start in range(0, len(samples), CHUNK):
        calibrator.collect_data(_Reader(samples[start:start + CHUNK]))
    cache = work / "ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def count_qdq(model: onnx.ModelProto) -> tuple[int, int]:
    """(QuantizeLinear, DequantizeLinear) node counts."""
    ops = [n.op_type for n in model.graph.node]
    return ops.count("QuantizeLinear"), ops.count("DequantizeLinear")


def _check_samples(samples: Sequence[dict[str, np.ndarray]], contract: ModelContract | ModelCard) -> None:
    want, _ = contract.expected_io()
    for k, sample in enumerate(samples):
        if set(sample) != set(want):
            raise ConfigError(f"calibration sample {k}: inputs {sorted(sample)}, the model takes {sorted(want)}")
        for name, shape in want.items():
            v = sample[name]
            if v.dtype != np.float32 or len(v.shape) != len(shape) or any(
                    w is not None and w != h for h, w in zip(v.shape, shape)):
                raise ConfigError(f"calibration sample {k}: {name} is {v.dtype} {list(v.shape)}, "
                                  f"the model takes float32 {['N' if s is None else s for s in shape]}")
