"""Frame preprocessing (docs/preprocess.md): raw camera frames -> normalised planar RGB network input."""

from perception.preprocess.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalization,
    RemapMaps,
    YuvCoefficients,
    normalization_affine,
    yuv_to_rgb_coefficients,
)
from perception.preprocess.fast import FastPreprocessor
from perception.preprocess.reference import preprocess_reference

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FastPreprocessor",
    "Normalization",
    "RemapMaps",
    "YuvCoefficients",
    "normalization_affine",
    "preprocess_reference",
    "yuv_to_rgb_coefficients",
]
