"""Offline fleet work on more than one core or machine: one task per drive, on local processes or Ray."""

from replay.fleet.pool import DriveFailed, map_drives

__all__ = ["DriveFailed", "map_drives"]
