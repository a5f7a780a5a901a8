"""Multi-camera tracking: per-camera image tracks fused into objects in the vehicle frame.

Per frame set:
1. each camera's image tracks match its detections (`ImageTracks`: persistent per-camera ids, coasting);
2. every track that received a detection is placed on the ground (`ranging.RigRanging`, all cameras in one
   call);
3. camera by camera in order of capture time, each such measurement updates a fused object: a Kalman filter
   on the object's (x, y) relative to the ego vehicle, predicted to that camera's capture time. A track
   already linked to an object updates it while the measurement stays within the gate; unlinked tracks are
   assigned to objects of the same class that this camera has not measured in this frame (Hungarian on the
   squared Mahalanobis distance, gated), or else found a new object. So an object seen by two cameras is
   one object with one global id.
The motion model is constant relative acceleration: at a camera's range noise a constant-velocity filter
lags a braking lead's closing speed by 0.1-0.3 s, and delays the brake hint by as much.
A camera without a frame in the set (stale) is not advanced; its tracks expire after `max_coast_s` and
objects left without tracks are dropped. Time only ever comes from the frames' t_ns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from perception.detections import Detections
from perception.track import kalman
from perception.track.camera_tracker import ImageTracks
from perception.track.config import TrackerConfig
from perception.track.matching import gated_assignment
from perception.track.objects import TrackedObjects
from perception.track.ranging import RangeEstimates, RangeSource, RangingConfig, RigRanging

if TYPE_CHECKING:
    from calib.camera import CameraModel

_H_POSITION = np.eye(2, 6)
_I2 = np.eye(2)
_AHEAD_PROBE_M = 20.0  # a camera "sees ahead" if the corridor centre this far before the bumper is in view


@dataclass
class _FusedObject:
    id: int
    cls: int
    x: np.ndarray         # [6] x, y, vx, vy, ax, ay relative to ego (m, m/s, m/s^2)
    P: np.ndarray         # [6, 6]
    t_ns: int             # time of x
    birth_ns: int
    last_update_ns: int
    range_source: int
    hits: int = 1
    links: dict[int, int] = field(default_factory=dict)  # camera index -> per-camera track id


class MultiCameraTracker:
    def __init__(self, cameras: Sequence["CameraModel"], config: TrackerConfig | None = None,
                 ranging: RangingConfig | None = None):
        self.cameras = tuple(cameras)
        self.config = config or TrackerConfig()
        self.ranging = ranging or RangingConfig()
        self.ranging_model = RigRanging(self.cameras, self.ranging)
        self.tracks = ImageTracks(self.config, [(c.width, c.height) for c in self.cameras])
        self.camera_t_ns: list[int | None] = [None] * len(self.cameras)
        self.objects: dict[int, _FusedObject] = {}
        self.out_of_order_frames = 0      # camera frames not newer than that camera's previous one, ignored
        self.unranged_measurements = 0    # detections matched to a track but with no usable range
        self._next_id = 1
        self._link: dict[tuple[int, int], int] = {}  # (camera, track id) -> fused object id
        self.camera_sees_ahead = np.array([_sees_ahead(c, self.config.ego_front_m) for c in self.cameras])

    def update(self, t_ns: int, camera_t_ns: Mapping[int, int], detections: Detections) -> TrackedObjects:
        """One frame set at time t_ns. `camera_t_ns` holds the capture time of each camera (rig index) that
        delivered a frame to this set; cameras absent from it are stale. `detections` are of those frames."""
        unknown = set(np.unique(detections.camera).tolist()) - set(camera_t_ns)
        if unknown:
            raise ValueError(f"detections of camera(s) {sorted(unknown)} that have no frame in this set")
        for c in camera_t_ns:
            if not 0 <= c < len(self.cameras):
                raise ValueError(f"camera index {c} is not in the rig ({len(self.cameras)} cameras)")

        # The cameras' image tracks do not depend on the fusion, so all cameras are stepped first (one table)
        # and their measurements ranged in one call; the fusion then takes the cameras in order of capture time.
        frames = []
        for c, cam_t in sorted(camera_t_ns.items(), key=lambda item: (item[1], item[0])):
            previous = self.camera_t_ns[c]
            if previous is not None and cam_t <= previous:
                self.out_of_order_frames += 1
                continue
            self.camera_t_ns[c] = cam_t
            frames.append((c, cam_t))
        camera_rows = [(detections.camera == c).nonzero()[0] for c, _ in frames]
        camera_steps = self.tracks.step([(c, cam_t, detections.select(rows))
                                         for (c, cam_t), rows in zip(frames, camera_rows)])
        steps = [(c, cam_t, step, rows[step.det_index])
                 for (c, cam_t), rows, step in zip(frames, camera_rows, camera_steps)]
        measured = np.concatenate([rows for *_, rows in steps]) if steps else np.zeros(0, np.intp)
        estimates = self.ranging_model.estimate(detections.camera[measured], detections.box[measured],
                                                detections.cls[measured], detections.range_m[measured])
        updated: set[int] = set()
        start = 0
        for c, cam_t, step, rows in steps:
            self._unlink(c, step.dropped)
            end = start + len(rows)
            updated |= self._fuse(c, cam_t, step.track_ids, detections.cls[rows], estimates.rows(slice(start, end)))
            start = end

        for c, dropped in enumerate(self.tracks.expire(t_ns)):
            self._unlink(c, dropped)
        for obj_id in [i for i, obj in self.objects.items() if not obj.links]:
            del self.objects[obj_id]
        return self._output(t_ns, updated)

    # ---- fusion ----------------------------------------------------------------------------------------
    def _fuse(self, c: int, t_ns: int, track_ids: np.ndarray, cls: np.ndarray, est: RangeEstimates) -> set[int]:
        """Apply one camera's measurements; returns the ids of the objects it updated."""
        self._predict_objects(t_ns)
        extent = self.config.fusion_extent_std_m ** 2 * _I2
        ranged = est.source != RangeSource.NONE
        self.unranged_measurements += len(ranged) - int(ranged.sum())
        ids = track_ids.tolist()
        linked, unlinked = [], []
        for i in ranged.nonzero()[0].tolist():
            obj_id = self._link.get((c, ids[i]))
            if obj_id is None:
                unlinked.append(i)
            else:
                linked.append((i, self.objects[obj_id]))
        measured: list[tuple[int, _FusedObject]] = []
        if linked:
            rows = np.array([i for i, _ in linked])
            d2 = kalman.mahalanobis2_paired(np.array([o.x for _, o in linked]), np.array([o.P for _, o in linked]),
                                            est.position[rows, :2], est.covariance[rows] + extent, _H_POSITION)
            for (i, obj), inside in zip(linked, (d2 <= self.config.fusion_gate_chi2).tolist()):
                if inside:
                    measured.append((i, obj))
                else:  # the track drifted off its object: it may join another one or start its own
                    del obj.links[c]
                    del self._link[(c, ids[i])]
                    unlinked.append(i)

        # Objects this camera has not measured in this frame; one whose track here got a detection (but no
        # range) is not up for grabs either.
        taken = {obj.id for _, obj in measured}
        detected_here = set(ids)
        candidates = [obj for obj in self.objects.values()
                      if obj.id not in taken and obj.links.get(c) not in detected_here]
        assigned: dict[int, int] = {}
        if unlinked and candidates:
            rows = np.array(unlinked)
            cost = kalman.mahalanobis2(np.array([o.x for o in candidates]), np.array([o.P for o in candidates]),
                                       est.position[rows, :2], est.covariance[rows] + extent, _H_POSITION)
            cost[np.array([o.cls for o in candidates])[:, None] != cls[rows][None, :]] = np.inf
            obj_rows, meas_rows = gated_assignment(cost, self.config.fusion_gate_chi2)
            assigned = dict(zip(meas_rows.tolist(), obj_rows.tolist()))
        created: set[int] = set()
        for k, i in enumerate(unlinked):
            if k in assigned:
                obj = candidates[assigned[k]]
                replaced = obj.links.get(c)
                if replaced is not None:  # the camera lost and re-found the object: the new track takes over
                    self.tracks.remove(c, np.array([replaced]))
                    del self._link[(c, replaced)]
                measured.append((i, obj))
            else:
                obj = self._new_object(int(cls[i]), est, i, t_ns)
                created.add(obj.id)
            obj.links[c] = ids[i]
            self._link[(c, ids[i])] = obj.id
        self._measure(measured, c, est, t_ns)
        return {obj.id for _, obj in measured} | created

    def _predict_objects(self, t_ns: int) -> None:
        """Predict every object to t_ns; a measurement older than an object's state is applied at the
        state's time (out-of-sequence by at most the frame-set skew)."""
        objs = [o for o in self.objects.values() if o.t_ns < t_ns]
        if not objs:
            return
        dt = np.array([(t_ns - o.t_ns) * 1e-9 for o in objs])
        x, P = kalman.predict(np.array([o.x for o in objs]), np.array([o.P for o in objs]), dt,
                              np.full((len(objs), 2), self.config.jerk_std_mps3), order=3)
        for obj, x_k, P_k in zip(objs, x, P):
            obj.x, obj.P, obj.t_ns = x_k, P_k, t_ns

    def _measure(self, measured: list[tuple[int, _FusedObject]], c: int, est: RangeEstimates, t_ns: int) -> None:
        """Update each object with measurement row i of camera c."""
        if not measured:
            return
        rows = np.array([i for i, _ in measured])
        objs = [obj for _, obj in measured]
        # One camera's bias (pitch, footprint) persists, so only its frame-to-frame noise is filtered out;
        # cameras disagree by their biases, so with several cameras each counts with its total error.
        single_camera = np.array([set(obj.links) <= {c} for obj in objs])
        R = np.where(single_camera[:, None, None], est.noise_covariance[rows], est.covariance[rows])
        x, P = kalman.update(np.array([o.x for o in objs]), np.array([o.P for o in objs]), est.position[rows, :2],
                             R, _H_POSITION)
        for obj, x_k, P_k, source in zip(objs, x, P, est.source[rows].tolist()):
            obj.x, obj.P = x_k, P_k
            obj.hits += 1
            obj.last_update_ns = max(obj.last_update_ns, t_ns)
            obj.range_source = source

    def _new_object(self, cls: int, est: RangeEstimates, i: int, t_ns: int) -> _FusedObject:
        P = np.zeros((6, 6))
        P[:2, :2] = est.covariance[i]
        P[2:4, 2:4] = self.config.initial_velocity_std_mps ** 2 * np.eye(2)
        P[4:, 4:] = self.config.initial_acceleration_std_mps2 ** 2 * np.eye(2)
        x = np.concatenate([est.position[i, :2], np.zeros(4)])
        obj = _FusedObject(self._next_id, cls, x, P, t_ns, t_ns, t_ns, int(est.source[i]))
        self._next_id += 1
        self.objects[obj.id] = obj
        return obj

    def _unlink(self, c: int, track_ids: np.ndarray) -> None:
        for track_id in track_ids.tolist():
            obj_id = self._link.pop((c, track_id), None)
            if obj_id is not None and self.objects[obj_id].links.get(c) == track_id:
                del self.objects[obj_id].links[c]

    # ---- output ----------------------------------------------------------------------------------------
    def _output(self, t_ns: int, updated: set[int]) -> TrackedObjects:
        cfg = self.config
        tracks = self.tracks
        row_of = {key: r for r, key in enumerate(zip(tracks.camera.tolist(), tracks.ids.tolist()))}
        confirmed = tracks.confirmed.tolist()
        objs, link_rows, link_cameras = [], [], []  # objects with at least one confirmed track, and their tracks
        for obj in sorted(self.objects.values(), key=lambda o: o.id):
            rows = [row_of[key] for key in obj.links.items()]
            if any(confirmed[r] for r in rows):
                objs.append(obj)
                link_rows.append(rows)
                link_cameras.extend(obj.links)
        n = len(objs)
        x = np.zeros((n, 6))
        P = np.zeros((n, 6, 6))
        if n:
            x, P = kalman.predict(np.array([o.x for o in objs]), np.array([o.P for o in objs]),
                                  np.array([(t_ns - o.t_ns) * 1e-9 for o in objs]),
                                  np.full((n, 2), cfg.jerk_std_mps3), order=3)
        cls = np.array([o.cls for o in objs], np.int32)
        footprint = self.ranging.footprint(cls)
        gap, closing, closing_var, ttc = _gap_and_ttc(x[:, :2], x[:, 2:4], P[:, 2:4, 2:4], footprint, cfg.ego_front_m)

        counts = np.array([len(rows) for rows in link_rows], np.intp)
        link_obj = np.repeat(np.arange(n), counts)
        link_row = np.array([r for rows in link_rows for r in rows], np.intp)
        link_camera = np.array(link_cameras, np.intp)
        track_ids = np.full((n, len(self.cameras)), -1, np.int64)
        track_ids[link_obj, link_camera] = tracks.ids[link_row]
        # The box comes from the camera that measured the object last; ties go to the larger box, then to the
        # first link: sorted so, each object's last entry is that track.
        order = np.lexsort((-np.arange(len(link_row)), tracks.x[link_row, 3], tracks.last_hit_ns[link_row], link_obj))
        chosen = order[np.cumsum(counts) - 1]
        camera = link_camera[chosen].astype(np.int32)
        box = tracks.image_boxes[link_row[chosen]]
        score = np.maximum.reduceat(tracks.score[link_row], np.cumsum(counts) - counts) if n else np.zeros(0)
        hits = np.array([o.hits for o in objs], np.int32)
        since_update = np.array([max(0.0, (t_ns - o.last_update_ns) * 1e-9) for o in objs])
        confidence = score * np.minimum(1.0, hits / cfg.full_confidence_hits) * np.exp(-since_update / cfg.stale_tau_s)
        ground = np.full((n, 1), self.ranging.ground_z_m)
        return TrackedObjects(
            t_ns=t_ns, ego_front_m=cfg.ego_front_m,
            global_id=np.array([o.id for o in objs], np.int64),
            camera_track_id=track_ids,
            cls=cls,
            score=score.astype(np.float32),
            camera=camera,
            box=box.astype(np.float32),
            position=np.concatenate([x[:, :2], ground], 1).astype(np.float32),
            velocity=np.concatenate([x[:, 2:4], np.zeros((n, 1))], 1).astype(np.float32),
            acceleration=np.concatenate([x[:, 4:6], np.zeros((n, 1))], 1).astype(np.float32),
            position_std=np.sqrt(np.stack([P[:, 0, 0], P[:, 1, 1]], 1)).astype(np.float32),
            velocity_std=np.sqrt(np.stack([P[:, 2, 2], P[:, 3, 3]], 1)).astype(np.float32),
            footprint_m=footprint.astype(np.float32),
            range_m=np.hypot(x[:, 0], x[:, 1]).astype(np.float32),
            range_source=np.array([o.range_source for o in objs], np.uint8),
            gap_m=gap.astype(np.float32),
            closing_speed_mps=closing.astype(np.float32),
            closing_speed_std_mps=np.sqrt(closing_var).astype(np.float32),
            ttc_s=ttc.astype(np.float32),
            # born from a camera frame captured up to the sync skew after the frame set's time: age 0, not < 0
            age_s=np.array([max(0, t_ns - o.birth_ns) * 1e-9 for o in objs], np.float32),
            hits=hits,
            coasting=np.array([o.id not in updated for o in objs], bool),
            confidence=confidence.astype(np.float32),
            camera_age_s=np.array([np.inf if t is None else (t_ns - t) * 1e-9 for t in self.camera_t_ns],
                                  np.float32),
            camera_sees_ahead=self.camera_sees_ahead.copy(),
        )


def gap_and_ttc(position: np.ndarray, velocity: np.ndarray, footprint: np.ndarray,
                ego_front_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Gap (m) and time to collision (s) of objects with footprint centres position [N, 2], relative
    velocities [N, 2] and footprints (length, width) [N, 2] (aligned with the ego).

    The gap runs from the ego front bumper centre (ego_front_m, 0) to the object's nearest footprint edge
    along the line between them; TTC = gap / closing speed (the rate at which that distance shrinks), inf
    for objects whose centre is not ahead of the bumper or that are not closing."""
    gap, _, _, ttc = _gap_and_ttc(position, velocity, np.zeros((len(position), 2, 2)), footprint, ego_front_m)
    return gap, ttc


def _gap_and_ttc(position: np.ndarray, velocity: np.ndarray, velocity_cov: np.ndarray, footprint: np.ndarray,
                 ego_front_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """gap_and_ttc, plus the closing speed and its variance."""
    offset = position - np.array([ego_front_m, 0.0])
    distance = np.linalg.norm(offset, axis=1)
    direction = offset / np.maximum(distance, 1e-9)[:, None]
    support = footprint[:, 0] / 2 * np.abs(direction[:, 0]) + footprint[:, 1] / 2 * np.abs(direction[:, 1])
    gap = np.maximum(distance - support, 0.0)
    closing = -np.einsum("ni,ni->n", direction, velocity)
    closing_var = np.einsum("ni,nij,nj->n", direction, velocity_cov, direction)
    ahead = position[:, 0] > ego_front_m
    with np.errstate(divide="ignore"):
        ttc = np.where(ahead & (closing > 0), gap / np.where(closing > 0, closing, 1.0), np.inf)
    return gap, closing, closing_var, ttc


def _sees_ahead(camera: "CameraModel", ego_front_m: float) -> bool:
    uv, valid = camera.project(np.array([[ego_front_m + _AHEAD_PROBE_M, 0.0, 0.5]]))
    u, v = uv[0]
    return bool(valid[0] and 0 <= u <= camera.width - 1 and 0 <= v <= camera.height - 1)
