"""Streaming multi-camera perception node."""

__version__ = "0.1.0"
