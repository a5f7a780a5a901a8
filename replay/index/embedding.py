"""Per-frame-set embeddings for query by example: the temporal CNN's pooled state features.

The model publishes no feature output (and none is added here), but every engine step returns the
temporal state `state_features` [N, K-1, C, h, w], newest first: slot 0 is this frame set's feature map,
the same tensor the temporal head reads. Its spatial mean and max per channel, averaged over cameras and
scaled to unit length, is the embedding ([2C] float32). `StateTap` wraps the node's engine during an
indexing replay and keeps one embedding per step (the node steps the engine once per frame set).
"""

from __future__ import annotations

import numpy as np

from perception.engine.base import Engine, EngineState, Heads


def pooled_state(features: np.ndarray) -> np.ndarray:
    """[N, K-1, C, h, w] state -> [2C] unit vector (mean and max over the newest slot's pixels, camera mean)."""
    newest = np.asarray(features[:, 0], np.float32)
    pooled = np.concatenate([newest.mean(axis=(2, 3)), newest.max(axis=(2, 3))], axis=1).mean(axis=0)
    norm = float(np.linalg.norm(pooled))
    return (pooled / norm if norm > 0 else pooled).astype(np.float32)


class StateTap(Engine):
    """Runs `inner` unchanged and records the pooled state after each successful step."""

    def __init__(self, inner: Engine):
        self.inner = inner
        self.name, self.precision, self.contract = inner.name, inner.precision, inner.contract
        self.vectors: list[np.ndarray] = []
        self.failed_steps = 0

    def run(self, images: np.ndarray, t_ns: np.ndarray, state: EngineState,
            fresh: np.ndarray | None = None) -> tuple[Heads, EngineState]:
        try:
            heads, new_state = self.inner.run(images, t_ns, state, fresh)
        except Exception:
            self.failed_steps += 1
            raise
        self.vectors.append(pooled_state(new_state.features))
        return heads, new_state

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.inner._infer(inputs)
