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

_I2 = np.eye(2)
_XY, _VXY = np.arange(2), np.arange(2, 4)  # state entries of the position and the velocity
_UNRANGED = int(RangeSource.NONE)  # a plain int: comparing an array with the IntEnum is slow
_AHEAD_PROBE_M = 20.0  # a camera "sees ahead" if the corridor centre this far before the bumper is in view


class _Objects:
    """The fused objects as one table of parallel arrays (row r: object ids[r]; rows in order of id), so that
    a camera's measurements are gated, predicted and updated with array indexing."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.cls = np.zeros(0, np.int32)
        self.x = np.zeros((0, 6))               # x, y, vx, vy, ax, ay relative to ego (m, m/s, m/s^2)
        self.P = np.zeros((0, 6, 6))
        self.t_ns = np.zeros(0, np.int64)       # time of x
        self.birth_ns = np.zeros(0, np.int64)
        self.last_update_ns = np.zeros(0, np.int64)
        self.range_source = np.zeros(0, np.uint8)
        self.hits = np.zeros(0, np.int64)
        self.links: list[dict[int, int]] = []   # camera index -> per-camera track id
        self.row: dict[int, int] = {}           # object id -> row

    def __len__(self) -> int:
        return len(self.links)

    def append(self, ids: np.ndarray, cls: np.ndarray, x: np.ndarray, P: np.ndarray, t_ns: int,
               range_source: np.ndarray, links: list[dict[int, int]]) -> None:
        """New objects (ids above every present one), born and last updated at t_ns."""
        n = len(ids)
        times = np.full(n, t_ns, np.int64)
        self.row.update(zip(ids.tolist(), range(len(self), len(self) + n)))
        self.ids = np.concatenate([self.ids, ids])
        self.cls = np.concatenate([self.cls, cls.astype(np.int32)])
        self.x = np.concatenate([self.x, x])
        self.P = np.concatenate([self.P, P])
        self.t_ns = np.concatenate([self.t_ns, times])
        self.birth_ns = np.concatenate([self.birth_ns, times])
        self.last_update_ns = np.concatenate([self.last_update_ns, times])
        self.range_source = np.concatenate([self.range_source, range_source.astype(np.uint8)])
        self.hits = np.concatenate([self.hits, np.ones(n, np.int64)])
        self.links.extend(links)

    def drop_unlinked(self) -> None:
        """Remove the objects left without tracks."""
        keep = [bool(links) for links in self.links]
        if all(keep):
            return
        for name in ("ids", "cls", "x", "P", "t_ns", "birth_ns", "last_update_ns", "range_source", "hits"):
            setattr(self, name, getattr(self, name)[keep])
        self.links = [links for links in self.links if links]
        self.row = {obj_id: r for r, obj_id in enumerate(self.ids.tolist())}


class MultiCameraTracker:
    def __init__(self, cameras: Sequence["CameraModel"], config: TrackerConfig | None = None,
                 ranging: RangingConfig | None = None):
        self.cameras = tuple(cameras)
        self.config = config or TrackerConfig()
        self.ranging = ranging or RangingConfig()
        self.ranging_model = RigRanging(self.cameras, self.ranging)
        self.tracks = ImageTracks(self.config, [(c.width, c.height) for c in self.cameras])
        self.camera_t_ns: list[int | None] = [None] * len(self.cameras)
        self.objects = _Objects()
        self.out_of_order_frames = 0      # camera frames not newer than that camera's previous one, ignored
        self.unranged_measurements = 0    # detections matched to a track but with no usable range
        self._next_id = 1
        self._link: dict[tuple[int, int], int] = {}  # (camera, track id) -> fused object id
        self.camera_sees_ahead = np.array([_sees_ahead(c, self.config.ego_front_m) for c in self.cameras])

    def update(self, t_ns: int, camera_t_ns: Mapping[int, int], detections: Detections) -> TrackedObjects:
        """One frame set at time t_ns. `camera_t_ns` holds the capture time of each camera (rig index) that
        delivered a frame to this set; cameras absent from it are stale. `detections` are of those frames."""
        unknown = set(detections.camera.tolist()) - set(camera_t_ns)
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
        self.objects.drop_unlinked()
        return self._output(t_ns, updated)

    # ---- fusion ----------------------------------------------------------------------------------------
    def _fuse(self, c: int, t_ns: int, track_ids: np.ndarray, cls: np.ndarray, est: RangeEstimates) -> set[int]:
        """Apply one camera's measurements; returns the ids of the objects it updated."""
        objects = self.objects
        self._predict_objects(t_ns)
        extent = self.config.fusion_extent_std_m ** 2 * _I2
        ranged = (est.source != _UNRANGED).nonzero()[0].tolist()
        self.unranged_measurements += len(est.source) - len(ranged)
        ids = track_ids.tolist()
        linked, linked_rows, unlinked = [], [], []  # measurement indices (and their objects' rows)
        for i in ranged:
            obj_id = self._link.get((c, ids[i]))
            if obj_id is None:
                unlinked.append(i)
            else:
                linked.append(i)
                linked_rows.append(objects.row[obj_id])
        measured, measured_rows = [], []
        if linked:
            d2 = kalman.mahalanobis2_paired(objects.x[linked_rows], objects.P[linked_rows], est.position[linked, :2],
                                            est.covariance[linked] + extent)
            for i, row, inside in zip(linked, linked_rows, (d2 <= self.config.fusion_gate_chi2).tolist()):
                if inside:
                    measured.append(i)
                    measured_rows.append(row)
                else:  # the track drifted off its object: it may join another one or start its own
                    del objects.links[row][c]
                    del self._link[(c, ids[i])]
                    unlinked.append(i)

        created: list[int] = []
        if unlinked:
            # Objects this camera has not measured in this frame; one whose track here got a detection (but no
            # range) is not up for grabs either.
            taken, detected_here = set(measured_rows), set(ids)
            candidates = [r for r, links in enumerate(objects.links)
                          if r not in taken and links.get(c) not in detected_here]
            assigned: dict[int, int] = {}
            if candidates:
                cost = kalman.mahalanobis2(objects.x[candidates], objects.P[candidates], est.position[unlinked, :2],
                                           est.covariance[unlinked] + extent)
                cost[objects.cls[candidates][:, None] != cls[unlinked][None, :]] = np.inf
                obj_rows, meas_rows = gated_assignment(cost, self.config.fusion_gate_chi2)
                assigned = dict(zip(meas_rows.tolist(), obj_rows.tolist()))
            for k, i in enumerate(unlinked):
                if k not in assigned:
                    created.append(i)
                    continue
                row = candidates[assigned[k]]
                replaced = objects.links[row].get(c)
                if replaced is not None:  # the camera lost and re-found the object: the new track takes over
                    self.tracks.remove(c, np.array([replaced]))
                    del self._link[(c, replaced)]
                objects.links[row][c] = ids[i]
                self._link[(c, ids[i])] = int(objects.ids[row])
                measured.append(i)
                measured_rows.append(row)
        self._measure(measured, measured_rows, c, est, t_ns)
        new_ids = self._new_objects(created, [ids[i] for i in created], c, cls, est, t_ns)
        return set(objects.ids[measured_rows].tolist()) | set(new_ids)

    def _predict_objects(self, t_ns: int) -> None:
        """Predict every object to t_ns; a measurement older than an object's state is applied at the
        state's time (out-of-sequence by at most the frame-set skew)."""
        objects = self.objects
        behind = objects.t_ns < t_ns
        if not behind.any():
            return
        rows = slice(None) if behind.all() else behind
        x, P = kalman.predict(objects.x[rows], objects.P[rows], (t_ns - objects.t_ns[rows]) * 1e-9,
                              np.full((len(objects.ids[rows]), 2), self.config.jerk_std_mps3), order=3)
        objects.x[rows], objects.P[rows], objects.t_ns[rows] = x, P, t_ns

    def _measure(self, measured: list[int], rows: list[int], c: int, est: RangeEstimates, t_ns: int) -> None:
        """Update the objects of rows[k] with measurement measured[k] of camera c."""
        if not measured:
            return
        objects = self.objects
        # One camera's bias (pitch, footprint) persists, so only its frame-to-frame noise is filtered out;
        # cameras disagree by their biases, so with several cameras each counts with its total error.
        single_camera = np.array([objects.links[r].keys() <= {c} for r in rows])
        R = np.where(single_camera[:, None, None], est.noise_covariance[measured], est.covariance[measured])
        objects.x[rows], objects.P[rows] = kalman.update(objects.x[rows], objects.P[rows], est.position[measured, :2],
                                                         R)
        objects.hits[rows] += 1
        objects.last_update_ns[rows] = np.maximum(objects.last_update_ns[rows], t_ns)
        objects.range_source[rows] = est.source[measured]

    def _new_objects(self, measured: list[int], track_ids: list[int], c: int, cls: np.ndarray, est: RangeEstimates,
                     t_ns: int) -> list[int]:
        """Found an object on each measurement measured[k] (of track track_ids[k] of camera c); their ids."""
        if not measured:
            return []
        n = len(measured)
        P = np.zeros((n, 6, 6))
        P[:, :2, :2] = est.covariance[measured]
        P[:, 2:4, 2:4] = self.config.initial_velocity_std_mps ** 2 * _I2
        P[:, 4:, 4:] = self.config.initial_acceleration_std_mps2 ** 2 * _I2
        x = np.concatenate([est.position[measured, :2], np.zeros((n, 4))], 1)
        ids = list(range(self._next_id, self._next_id + n))
        self._next_id += n
        self.objects.append(np.array(ids, np.int64), cls[measured], x, P, t_ns, est.source[measured],
                            [{c: track_id} for track_id in track_ids])
        self._link.update(((c, track_id), obj_id) for track_id, obj_id in zip(track_ids, ids))
        return ids

    def _unlink(self, c: int, track_ids: np.ndarray) -> None:
        for track_id in track_ids.tolist():
            obj_id = self._link.pop((c, track_id), None)
            if obj_id is not None:
                links = self.objects.links[self.objects.row[obj_id]]
                if links.get(c) == track_id:
                    del links[c]

    # ---- output ----------------------------------------------------------------------------------------
    def _output(self, t_ns: int, updated: set[int]) -> TrackedObjects:
        cfg = self.config
        tracks, objects = self.tracks, self.objects
        row_of = {key: r for r, key in enumerate(zip(tracks.camera.tolist(), tracks.ids.tolist()))}
        confirmed = tracks.confirmed.tolist()
        sel, link_rows, link_cameras = [], [], []  # objects with at least one confirmed track, and their tracks
        for r, links in enumerate(objects.links):
            rows = [row_of[key] for key in links.items()]
            if any(confirmed[k] for k in rows):
                sel.append(r)
                link_rows.append(rows)
                link_cameras.extend(links)
        n = len(sel)
        x = np.zeros((n, 6))
        P = np.zeros((n, 6, 6))
        if n:
            x, P = kalman.predict(objects.x[sel], objects.P[sel], (t_ns - objects.t_ns[sel]) * 1e-9,
                                  np.full((n, 2), cfg.jerk_std_mps3), order=3)
        cls = objects.cls[sel]
        global_id = objects.ids[sel]
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
        hits = objects.hits[sel].astype(np.int32)
        since_update = np.maximum(0.0, (t_ns - objects.last_update_ns[sel]) * 1e-9)
        confidence = score * np.minimum(1.0, hits / cfg.full_confidence_hits) * np.exp(-since_update / cfg.stale_tau_s)
        ground = np.full((n, 1), self.ranging.ground_z_m)
        return TrackedObjects(
            t_ns=t_ns, ego_front_m=cfg.ego_front_m,
            global_id=global_id,
            camera_track_id=track_ids,
            cls=cls,
            score=score.astype(np.float32),
            camera=camera,
            box=box.astype(np.float32),
            position=np.concatenate([x[:, :2], ground], 1).astype(np.float32),
            velocity=np.concatenate([x[:, 2:4], np.zeros((n, 1))], 1).astype(np.float32),
            acceleration=np.concatenate([x[:, 4:6], np.zeros((n, 1))], 1).astype(np.float32),
            position_std=np.sqrt(P[:, _XY, _XY]).astype(np.float32),
            velocity_std=np.sqrt(P[:, _VXY, _VXY]).astype(np.float32),
            footprint_m=footprint.astype(np.float32),
            range_m=np.hypot(x[:, 0], x[:, 1]).astype(np.float32),
            range_source=objects.range_source[sel],
            gap_m=gap.astype(np.float32),
            closing_speed_mps=closing.astype(np.float32),
            closing_speed_std_mps=np.sqrt(closing_var).astype(np.float32),
            ttc_s=ttc.astype(np.float32),
            # born from a camera frame captured up to the sync skew after the frame set's time: age 0, not < 0
            age_s=(np.maximum(t_ns - objects.birth_ns[sel], 0) * 1e-9).astype(np.float32),
            hits=hits,
            coasting=np.array([obj_id not in updated for obj_id in global_id.tolist()], bool),
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
    distance = np.sqrt(np.add.reduce(offset * offset, axis=1))  # np.linalg.norm without its overhead
    direction = offset / np.maximum(distance, 1e-9)[:, None]
    support = footprint[:, 0] / 2 * np.abs(direction[:, 0]) + footprint[:, 1] / 2 * np.abs(direction[:, 1])
    gap = np.maximum(distance - support, 0.0)
    closing = -np.einsum("ni,ni->n", direction, velocity)
    closing_var = np.einsum("ni,nij,nj->n", direction, velocity_cov, direction)
    ahead = position[:, 0] > ego_front_m
    ttc = np.where(ahead & (closing > 0), gap / np.where(closing > 0, closing, 1.0), np.inf)
    return gap, closing, closing_var, ttc


def _sees_ahead(camera: "CameraModel", ego_front_m: float) -> bool:
    uv, valid = camera.project(np.array([[ego_front_m + _AHEAD_PROBE_M, 0.0, 0.5]]))
    u, v = uv[0]
    return bool(valid[0] and 0 <= u <= camera.width - 1 and 0 <= v <= camera.height - 1)
