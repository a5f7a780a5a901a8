"""Inference engines behind one interface: ONNX Runtime (default), torch (debugging parity), TensorRT (GPU)."""

from perception.engine.base import Engine, EngineInputError, EngineState, Heads

__all__ = ["Engine", "EngineInputError", "EngineState", "Heads"]
