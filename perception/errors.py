"""Errors the node reports to users: each names the file / field / message and what is wrong."""


class PerceptionError(Exception):
    """Base class for every user-facing error of this project."""


class CalibrationError(PerceptionError):
    """A calibration file or camera model is invalid."""


class DriveError(PerceptionError):
    """A drive file (MCAP, bag, video) is invalid or unreadable."""


class FrameError(PerceptionError):
    """A frame buffer does not match its declared format, size or stride."""


class ConfigError(PerceptionError):
    """A configuration file or value is invalid."""


class ModelContractError(PerceptionError):
    """A model's contract (ONNX metadata) does not match the configuration."""


class MessageError(PerceptionError):
    """A network message is malformed, too large or of an unsupported schema version."""


class SourceError(PerceptionError):
    """The node's sources delivered no frames (cameras that cannot be opened, a silent frame bus)."""
