"""Network heads -> Detections in original camera pixels (no torch)."""

from perception.decode.centernet import DecodeConfig, Decoder, find_peaks

__all__ = ["DecodeConfig", "Decoder", "find_peaks"]
