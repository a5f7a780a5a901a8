"""Scenario search end to end on synthetic drives whose events are known exactly (replay/index, docs/fleet.md).

The expected moments come from the scenario's scripted World (the lead's brake time, each crossing road
user's walk start), not from the index's own ground-truth reading.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

duckdb = pytest.importorskip("duckdb")

from perception.errors import ConfigError  # noqa: E402
from perception.io.run_file import load_run  # noqa: E402
from replay.index.events import VRU  # noqa: E402
from replay.index.indexer import index_paths  # noqa: E402
from replay.index.query import parse  # noqa: E402
from replay.index.search import like, search  # noqa: E402
from replay.synth import cached_drive  # noqa: E402
from replay.synth.generator import SynthConfig  # noqa: E402
from replay.synth.scenarios import SCENARIOS  # noqa: E402

SMALL = dict(fps=10.0, width=320, height=180)
DRIVES = {
    "lead_brake": dict(seed=5, seconds=5.0, num_cameras=1, scenario="lead_brake", **SMALL),
    "crossing": dict(seed=1, seconds=6.0, num_cameras=1, scenario="crossing", **SMALL),
    "cut_in": dict(seed=41, seconds=3.0, num_cameras=2, scenario="cut_in", drop_prob=0.2, **SMALL),
}
TOLERANCE_S = 0.5


def world(params: dict):
    config = SynthConfig(**params)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(4)[0])  # as generate_drive seeds it
    return SCENARIOS[config.scenario](rng, config.num_frames / config.fps)


def crossers(params: dict) -> list[tuple[int, float]]:
    """(actor id, time it starts walking / riding across) of every road user crossing during the drive."""
    w = world(params)
    found = []
    for actor in w.actors:
        if actor.cls in VRU and abs(abs(actor.motion.heading) - math.pi / 2) < 1e-9:
            profile = actor.motion.speed
            t0 = 0.0 if profile.v0 > 0 else profile.changes[0].t
            if t0 < params["seconds"] - TOLERANCE_S:
                found.append((actor.id, t0))
    return found


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    drives = {name: cached_drive(**params) for name, params in DRIVES.items()}
    db = root / "fleet.duckdb"
    results = index_paths(list(drives.values()), db, runs_dir=root / "runs", parquet=root / "parquet")
    assert all(r.ok for r in results), [r.error for r in results]
    ids = {name: r.drive for name, r in zip(drives, results)}
    return db, ids, root


def test_every_lead_brake_onset_is_found_and_no_false_windows(indexed):
    db, ids, _ = indexed
    t_brake = world(DRIVES["lead_brake"]).actors[0].motion.speed.changes[0].t  # the lead is actor 1
    hits = search(db, "lead_brake")
    assert [h.drive for h in hits] == [ids["lead_brake"]]
    assert abs(hits[0].start_s - t_brake) <= TOLERANCE_S
    assert "lead 1 brakes" in hits[0].why


def test_every_crossing_road_user_is_found_and_no_false_windows(indexed):
    db, ids, _ = indexed
    expected = crossers(DRIVES["crossing"])
    assert len(expected) >= 3
    con = duckdb.connect(str(db), read_only=True)
    events = con.execute("SELECT track_id, (start_ns - (SELECT start_ns FROM drives WHERE drive = ?)) / 1e9 "
                         "FROM events WHERE drive = ? AND kind = 'crossing' AND source = 'truth'",
                         [ids["crossing"], ids["crossing"]]).fetchall()
    con.close()
    for actor, t0 in expected:
        starts = [s for track, s in events if track == actor]
        assert starts and min(abs(s - t0) for s in starts) <= TOLERANCE_S, (actor, t0, events)
    hits = search(db, "truth crossing")
    assert {h.drive for h in hits} == {ids["crossing"]}
    for _, t0 in expected:  # every crossing moment lies in a window
        assert any(h.start_s - TOLERANCE_S <= t0 <= h.end_s for h in hits)


def test_output_events_are_exactly_the_hint_changes(indexed):
    db, ids, root = indexed
    run = load_run(root / "runs" / f"{ids['lead_brake']}.run.mcap")
    stages = [(r.t_ns, r.message.brake) for r in run.hints]
    onsets = [t for (t, s), (_, before) in zip(stages[1:], stages) if s == "brake" and before != "brake"]
    assert onsets, "the node never braked on the lead_brake drive"
    assert [h.start_ns for h in search(db, "brake_onset") if h.drive == ids["lead_brake"]] == onsets
    frames = {t for t, s in stages if s != "none"}
    for hit in (h for h in search(db, "brake>=prepare") if h.drive == ids["lead_brake"]):
        assert hit.start_ns in frames and hit.end_ns in frames


def test_camera_stale_windows_cover_exactly_the_stale_frame_sets(indexed):
    db, ids, root = indexed
    run = load_run(root / "runs" / f"{ids['cut_in']}.run.mcap")
    stale = sorted(r.t_ns for r in run.detections if r.message.stale.any())
    assert stale, "drop_prob 0.2 on two cameras should leave some frame set with a stale camera"
    hits = search(db, "camera stale", gap_s=0.0)
    assert {h.drive for h in hits} == {ids["cut_in"]}
    covered = sorted(t for t in (r.t_ns for r in run.detections) if any(h.start_ns <= t <= h.end_ns for h in hits))
    assert covered == stale


def test_object_query_matches_its_definition(indexed):
    db, ids, _ = indexed
    hits = search(db, "vehicle ahead range<25 and brake>=prepare", gap_s=0.0)
    con = duckdb.connect(str(db), read_only=True)
    want = con.execute("SELECT DISTINCT o.drive, o.t_ns FROM objects o JOIN hints h USING (drive, t_ns) WHERE "
                       "o.cls IN ('car', 'truck') AND o.x > 0 AND abs(o.y) <= 2.5 AND o.range_m < 25 AND "
                       "h.brake_level >= 1 ORDER BY 1, 2").fetchall()
    con.close()
    assert want, "the lead_brake drive has a close lead while braking"
    assert [(h.drive, h.start_ns) for h in hits] == want  # gap 0: one window per frame set
    sql_hits = search(db, sql="SELECT drive, t_ns FROM hints WHERE brake = 'brake'")
    windows = lambda hits: [(h.drive, h.start_ns, h.end_ns, h.frame_sets) for h in hits]  # noqa: E731
    assert windows(sql_hits) == windows(search(db, "brake=brake"))


def test_for_keeps_only_long_windows(indexed):
    db, _, _ = indexed
    short, long = search(db, "ttc<3"), search(db, "ttc<3 for>=1s")
    assert {(h.drive, h.start_ns) for h in long} <= {(h.drive, h.start_ns) for h in short}
    assert all(h.end_s - h.start_s >= 1.0 - 1e-9 for h in long)


def test_reindexing_replaces_the_drives_rows(indexed, tmp_path):
    db, ids, root = indexed
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(db.read_bytes())
    count = "SELECT (SELECT count(*) FROM objects), (SELECT count(*) FROM events), (SELECT count(*) FROM drives)"
    con = duckdb.connect(str(copy), read_only=True)
    before = con.execute(count).fetchone()
    con.close()
    result, = index_paths([root / "runs" / f"{ids['cut_in']}.run.mcap"], copy)  # the run, indexed again
    assert result.ok and result.drive == ids["cut_in"]
    con = duckdb.connect(str(copy), read_only=True)
    assert con.execute(count).fetchone() == before
    assert con.execute("SELECT has_embeddings FROM drives WHERE drive = ?", [ids["cut_in"]]).fetchone() == (False,)
    con.close()


def test_parquet_tables_hold_the_same_rows(indexed):
    db, _, root = indexed
    con = duckdb.connect(str(db), read_only=True)
    for table in ("frames", "objects", "events", "embeddings"):
        n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        assert n > 0
        assert con.execute(f"SELECT count(*) FROM '{root / 'parquet' / (table + '.parquet')}'").fetchone()[0] == n
    con.close()


def test_like_returns_the_most_similar_moments_by_cosine(indexed):
    db, ids, _ = indexed
    hits = like(db, f"{ids['lead_brake']}@3.0", k=4)
    assert 1 <= len(hits) <= 4
    con = duckdb.connect(str(db), read_only=True)
    start = con.execute("SELECT start_ns FROM drives WHERE drive = ?", [ids["lead_brake"]]).fetchone()[0]
    q = np.array(con.execute("SELECT vec FROM embeddings WHERE drive = ? ORDER BY abs(t_ns - ?) LIMIT 1",
                             [ids["lead_brake"], start + 3_000_000_000]).fetchone()[0])
    rows = con.execute("SELECT drive, t_ns, vec FROM embeddings").fetchall()
    con.close()
    cosine = {(d, t): float(np.dot(q, v) / np.linalg.norm(q) / np.linalg.norm(v)) for d, t, v in rows}
    sims = [float(h.why.split()[1]) for h in hits]
    assert sims == sorted(sims, reverse=True)
    for hit, sim in zip(hits, sims):
        assert cosine[(hit.drive, hit.start_ns)] == pytest.approx(sim, abs=1e-4)
    best_elsewhere = max(v for (d, t), v in cosine.items()
                         if not (d == ids["lead_brake"] and abs(t - start - 3_000_000_000) < 2_000_000_000))
    assert sims[0] == pytest.approx(best_elsewhere, abs=1e-4)


def test_bad_queries_are_clear_errors(indexed):
    db, _, _ = indexed
    for text, words in (("pedestrain ahead", "unknown word 'pedestrain'"), ("range<abc", "not a number"),
                        ("brake>=hard", "brake is one of"), ("", "empty")):
        with pytest.raises(ConfigError, match=words):
            parse(text)
    with pytest.raises(ConfigError, match="--sql"):
        search(db, sql="SELECT drive, t_ns FROM no_such_table")
    with pytest.raises(ConfigError, match="no drive 'nope'"):
        like(db, "nope@1.0")


def test_export_cuts_a_clip_that_is_a_regression_case(indexed, tmp_path, replay_regression):
    from replay.index.clips import export_clips
    from replay.index.sheet import write_contact_sheet
    from perception.io.drive import DriveReader

    db, ids, _ = indexed
    hit = search(db, "lead_brake")[0]
    clip, = export_clips(db, [hit], tmp_path / "clips", pad_s=0.3)
    with DriveReader(clip) as drive:  # images and ground truth of the hit, padded
        times = sorted({f.t_ns for f in drive.frames()})
        assert times[0] <= hit.start_ns and times[-1] >= hit.end_ns
        assert times[-1] - times[0] <= hit.end_ns - hit.start_ns + 600_000_000
        assert len(list(drive.ground_truth())) == len(times)
    assert load_run(clip).detections  # the outputs
    replay_regression(clip, golden=clip)
    sheet = write_contact_sheet(db, [hit], tmp_path / "sheet.html", title="lead_brake")
    assert sheet.read_text().count("data:image/jpeg;base64,") == 1


def test_index_and_search_commands(indexed, tmp_path, capsys):
    from perception.cli import main

    db, ids, root = indexed
    run = root / "runs" / f"{ids['lead_brake']}.run.mcap"
    assert main(["index", str(run), str(tmp_path / "missing.mcap"), "--db", str(tmp_path / "f.duckdb")]) == 1
    out = capsys.readouterr()
    assert f"{ids['lead_brake']}: 50 frame sets" in out.out and "missing.mcap" in out.err
    assert main(["search", "lead_brake", "--db", str(tmp_path / "f.duckdb")]) == 0
    assert "lead 1 brakes" in capsys.readouterr().out
    assert main(["search", "pedestrain", "--db", str(tmp_path / "f.duckdb")]) == 2
    assert "unknown word 'pedestrain'" in capsys.readouterr().err
    assert main(["search", "cut_in", "--db", str(tmp_path / "none.duckdb")]) == 2
