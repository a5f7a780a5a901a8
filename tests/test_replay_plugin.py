"""The pytest plugin: a user's test suite asserts "this drive still replays within tolerance" in one line,
records golden runs with --update-golden, and fails with the diff on a regression."""

from __future__ import annotations

import pytest

from tests.test_replay_support import write_drive

pytest_plugins = ["pytester"]

USER_TESTS = """
from tests.test_replay_support import simulated_replay

def test_drive(replay_regression):
    replay_regression("data/drive.mcap", golden="golden/drive.run.mcap", replay=simulated_replay)

def test_drive_blind_to_trucks(replay_regression):
    replay_regression("data/drive.mcap", golden="golden/drive.run.mcap", replay=simulated_replay,
                      config={"drop_ids": (2,)})

def test_drive_blind_to_trucks_within_loose_tolerances(replay_regression):
    result = replay_regression("data/drive.mcap", golden="golden/drive.run.mcap", replay=simulated_replay,
                               config={"drop_ids": (2,)}, tolerances="loose.yaml")
    assert result.counts()["missing object"] > 0

def test_missing_drive(replay_regression):
    replay_regression("data/nowhere.mcap", golden="golden/drive.run.mcap", replay=simulated_replay)
"""


@pytest.fixture
def suite(pytester):
    (pytester.path / "data").mkdir()
    write_drive(pytester.path / "data" / "drive.mcap", frames=12)
    pytester.makepyfile(test_user=USER_TESTS)
    (pytester.path / "loose.yaml").write_text("objects:\n  max_missing_objects: 100\n")
    return pytester


def test_golden_runs_are_recorded_then_enforced(suite):
    first = suite.runpytest_inprocess("-p", "replay.pytest_plugin", "-k", "test_drive and not blind")
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(["*no golden run at *golden/drive.run.mcap; record it with `pytest --update-golden`*"])

    update = suite.runpytest_inprocess("-p", "replay.pytest_plugin", "--update-golden", "-k", "test_drive and not blind")
    update.assert_outcomes(passed=1)
    update.stdout.fnmatch_lines(["*golden runs rewritten (--update-golden)*", "*golden/drive.run.mcap: created"])
    assert (suite.path / "golden" / "drive.run.mcap").stat().st_size > 1000

    again = suite.runpytest_inprocess("-p", "replay.pytest_plugin", "-rf")
    again.assert_outcomes(passed=2, failed=2)
    again.stdout.fnmatch_lines([
        "*drive.mcap no longer replays within tolerance of drive.run.mcap*",
        "*missing object: front truck #102 box*",
        "*FAIL: * missing objects (allowed 0)*",
    ])
    again.stdout.fnmatch_lines(["*replay_regression: drive *data/nowhere.mcap does not exist*"])

    accept = suite.runpytest_inprocess("-p", "replay.pytest_plugin", "--update-golden", "-k", "blind_to_trucks and not loose")
    accept.assert_outcomes(passed=1)
    accept.stdout.fnmatch_lines(["*golden/drive.run.mcap: replaced (* missing objects (allowed 0))"])
    after = suite.runpytest_inprocess("-p", "replay.pytest_plugin", "-k", "test_drive and not loose")
    after.assert_outcomes(passed=1, failed=1)   # the truck is back in test_drive: extra objects now
    after.stdout.fnmatch_lines(["*extra object: front truck #102 box*"])


def test_option_is_listed_in_help(pytester):
    result = pytester.runpytest_inprocess("-p", "replay.pytest_plugin", "--help")
    result.stdout.fnmatch_lines(["*perception replay*", "*--update-golden*record the golden runs*"])
