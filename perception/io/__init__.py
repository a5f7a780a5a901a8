"""Recorded inputs and outputs of the node: drive, bag and video readers, and the run recorder.

The core reads drives and writes runs itself; the replay harness (`replay/`) builds on these modules and
is never imported by them.
"""
