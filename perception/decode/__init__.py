"""Network outputs -> Detections in original camera pixels (no torch).

    decoder = make_decoder(contract_or_card, tables, DecodeConfig.for_classes(contract.classes, 0.3))
    detections = decoder(outputs, fresh)

CenterNet heads of an exported temporal model (centernet.py) or a plug-in detector's outputs (yolox.py).
"""

from collections.abc import Sequence

from perception.decode.centernet import Decoder, find_peaks
from perception.decode.common import DecodeConfig
from perception.decode.yolox import DetectorDecoder


def make_decoder(contract, tables: Sequence, config: DecodeConfig) -> Decoder | DetectorDecoder:
    """The decoder of a model: CenterNet heads for a ModelContract, DetectorDecoder for a ModelCard."""
    if getattr(contract, "stateless", False):
        return DetectorDecoder(contract, tables, config)
    return Decoder(contract, tables, config)


__all__ = ["DecodeConfig", "Decoder", "DetectorDecoder", "find_peaks", "make_decoder"]
