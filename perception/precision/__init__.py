"""Reduced-precision models for the engines: float16 conversion and INT8 Q/DQ quantization of the ONNX.

TensorRT 11 builds strongly typed networks only, so the precision lives in the ONNX graph: the same
fp16 / int8 files run on ONNX Runtime CPU (tests, accuracy tables) and build into TensorRT engines.
"""

from perception.precision.metadata import PRECISIONS, PrecisionInfo, precision_of, read_precision

__all__ = ["PRECISIONS", "PrecisionInfo", "precision_of", "read_precision"]
