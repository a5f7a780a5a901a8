"""Ray: replay, index and INT8 calibration spread over a local 2-CPU Ray cluster give the local results
(replay/fleet/pool.py, docs/fleet.md); a broken drive fails alone."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")
duckdb = pytest.importorskip("duckdb")

from replay.determinism import assert_runs_identical  # noqa: E402
from replay.runner_pool import replay_drives  # noqa: E402
from replay.synth import cached_drive  # noqa: E402

TINY = dict(seconds=1.0, fps=10.0, num_cameras=1, width=160, height=90)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def drives(tmp_path_factory):
    broken = tmp_path_factory.mktemp("broken") / "broken.mcap"
    broken.write_bytes(b"\x89MCAP0\r\n this is not a drive")
    return [cached_drive(seed=3, scenario="lead_brake", **TINY), cached_drive(seed=8, scenario="cut_in", **TINY), broken]


def test_ray_replay_equals_local_replay_and_a_broken_drive_fails_alone(local_ray, drives, tmp_path):
    on_ray = replay_drives(drives, tmp_path / "ray", use_ray=True, progress=False)
    local = replay_drives(drives[:2], tmp_path / "local", jobs=1, progress=False)
    assert [r.ok for r in on_ray.results] == [True, True, False], [r.error for r in on_ray.results]
    assert "broken.mcap" in on_ray.results[2].drive and on_ray.results[2].error
    assert "FAILED" in on_ray.table()
    for a, b in zip(on_ray.results[:2], local.results):
        assert a.frame_sets == b.frame_sets == 10
        assert_runs_identical(a.run, b.run)


def test_ray_index_equals_local_index(local_ray, drives, tmp_path):
    from replay.index.indexer import index_paths
    from replay.index.tables import TABLES

    on_ray = index_paths(drives, tmp_path / "ray.duckdb", use_ray=True)
    local = index_paths(drives[:2], tmp_path / "local.duckdb")
    assert [r.ok for r in on_ray] == [True, True, False] and all(r.ok for r in local)
    a, b = duckdb.connect(str(tmp_path / "ray.duckdb")), duckdb.connect(str(tmp_path / "local.duckdb"))
    for table, columns in TABLES.items():
        names = ", ".join(c for c in columns if c != "run_path")  # the run files' folders differ
        rows_a = a.execute(f"SELECT {names} FROM {table} ORDER BY ALL").fetchall()
        assert rows_a == b.execute(f"SELECT {names} FROM {table} ORDER BY ALL").fetchall(), table
        assert rows_a or table == "events", table  # tiny drives may have no events


def test_ray_calibration_equals_local_calibration(local_ray, drives):
    import functools

    from perception.errors import DriveError
    from perception.precision.calibration import calibration_set
    from replay.fleet.pool import map_drives

    from tests.conftest import PROJECT_ROOT

    model = PROJECT_ROOT / "models" / "demo.onnx"
    spread = functools.partial(map_drives, use_ray=True)
    local = calibration_set(model, drives[:2], max_samples=4, every=2)
    on_ray = calibration_set(model, drives[:2], max_samples=4, every=2, spread=spread)
    assert len(on_ray.samples) == len(local.samples) == 4 and on_ray.frame_sets_run == local.frame_sets_run
    for x, y in zip(on_ray.samples, local.samples):
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    with pytest.raises(DriveError, match="broken.mcap"):
        calibration_set(model, drives, max_samples=6, spread=spread)


def test_ray_autolabel_equals_local_autolabel(local_ray, drives, tmp_path, capsys):
    from perception.cli import main
    from perception.io.drive import DriveReader

    from tests.conftest import PROJECT_ROOT

    teacher = PROJECT_ROOT / "models" / "demo.onnx"
    common = ["--teacher", str(teacher), "--threads", "1", "--end", "0.6"]
    assert main(["autolabel", *map(str, drives), "--out", str(tmp_path / "ray"), *common, "--ray"]) == 1
    assert "broken.mcap" in capsys.readouterr().err
    assert main(["autolabel", *map(str, drives[:2]), "--out", str(tmp_path / "local"), *common]) == 0
    for drive in drives[:2]:
        name = f"{drive.stem}.mcap"
        with DriveReader(tmp_path / "ray" / name) as a, DriveReader(tmp_path / "local" / name) as b:
            labels_a, labels_b = list(a.ground_truth()), list(b.ground_truth())
        assert labels_a and labels_a == labels_b
