"""Camera sources and frame-set assembly.

Pull sources (a recorded drive in `lockstep` or `fast` pacing) hand the node every frame in order;
push sources (live cameras, the ZeroMQ frame bus, a drive in `realtime` pacing) run one thread per
camera that fills a latest-frame slot, dropping (and counting) frames the node did not take in time.
"""

from perception.sources.slot import CapturedFrame, LatestFrameSlot
from perception.sources.sync import FrameSet, LiveSynchronizer, LockstepSynchronizer, SyncConfig

__all__ = ["CapturedFrame", "LatestFrameSlot", "FrameSet", "LiveSynchronizer", "LockstepSynchronizer", "SyncConfig"]
