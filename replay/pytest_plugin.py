"""pytest plugin: assert in a few lines that a drive still replays within tolerance of its golden run.

    def test_highway_drive(replay_regression):
        replay_regression("drives/highway.mcap", golden="golden/highway.run.mcap")

The fixture replays the drive with the real node (`replay.runner.replay_drive`) into the test's temporary
folder and compares the run with the golden one (replay.compare); on a regression the test fails with the
diff (which frames, which objects, by how much). Relative paths are taken from the test file's folder.
`pytest --update-golden` records the golden runs instead (creating missing ones), after printing the diff
against the old golden run; the terminal summary lists what it rewrote.

Installed with the package (entry point `pytest11`), or in a conftest.py:
`pytest_plugins = ["replay.pytest_plugin"]`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from replay.compare import CompareConfig, CompareResult, compare_runs, format_diff, update_golden

_UPDATED = pytest.StashKey[list]()

Replay = Callable[[Path, Path, Any], Any]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perception replay")
    group.addoption("--update-golden", action="store_true", default=False,
                    help="record the golden runs of replay_regression tests from this replay instead of "
                         "comparing with them")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_UPDATED] = []


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    updated = config.stash.get(_UPDATED, [])
    if updated:
        terminalreporter.section("golden runs rewritten (--update-golden)")
        for line in updated:
            terminalreporter.write_line(line)


class ReplayRegression:
    """The callable behind the `replay_regression` fixture."""

    def __init__(self, root: Path, workdir: Path, update: bool, updated: list[str]):
        self.root = root
        self.workdir = workdir
        self.update = update
        self._updated = updated

    def __call__(self, drive: str | Path, golden: str | Path, *, config: Any = None,
                 tolerances: CompareConfig | str | Path | None = None,
                 replay: Replay | None = None) -> CompareResult | None:
        """Replays `drive` (with the node `config`, passed to the replay function as it is) and checks the run
        against `golden` with `tolerances` (a CompareConfig, a tolerances YAML file, or the defaults).
        `replay` defaults to replay.runner.replay_drive. Returns the comparison (None when a golden run was
        created)."""
        drive, golden = self._path(drive), self._path(golden)
        if not drive.exists():
            pytest.fail(f"replay_regression: drive {drive} does not exist", pytrace=False)
        if tolerances is None or isinstance(tolerances, CompareConfig):
            compare_config = tolerances or CompareConfig()
        else:
            compare_config = CompareConfig.load(self._path(tolerances))
        if replay is None:
            from replay.runner import replay_drive as replay
        run = self.workdir / f"{golden.stem}.run.mcap"
        replay(drive, run, config)
        result = compare_runs(golden, run, compare_config) if golden.exists() else None
        if self.update:
            if result is not None:
                print(format_diff(result))
            golden.parent.mkdir(parents=True, exist_ok=True)
            update_golden(golden, run)
            self._updated.append(f"{golden}: " + ("created" if result is None else
                                                  "unchanged within tolerance" if result.passed else
                                                  f"replaced ({'; '.join(result.failures)})"))
            return result
        if result is None:
            pytest.fail(f"replay_regression: no golden run at {golden}; record it with `pytest --update-golden` "
                        f"(this replay is at {run})", pytrace=False)
        if not result.passed:
            pytest.fail(f"{drive.name} no longer replays within tolerance of {golden.name} (run kept at {run}; "
                        f"accept it with `pytest --update-golden`):\n\n{format_diff(result)}", pytrace=False)
        return result

    def _path(self, path: str | Path) -> Path:
        path = Path(path)
        return path if path.is_absolute() else self.root / path


@pytest.fixture
def replay_regression(request: pytest.FixtureRequest, tmp_path: Path) -> ReplayRegression:
    """`replay_regression(drive, golden, *, config=None, tolerances=None)`: replay the drive and fail the test
    when the run is not within tolerance of the golden run (see replay/pytest_plugin.py)."""
    return ReplayRegression(request.path.parent, tmp_path, request.config.getoption("update_golden"),
                            request.config.stash[_UPDATED])
