"""One task per drive, run in this process, a local process pool, or a Ray cluster (docs/fleet.md).

    map_drives(fn, drives, (extra, args), on_result=lambda i, outcome: ..., jobs=2)              # local
    map_drives(fn, drives, (extra, args), on_result=..., use_ray=True, ray_address="auto")       # Ray

`fn(drive, *args)` must be importable by the workers (a module-level function) and return something Ray /
multiprocessing can send back. `on_result(index, outcome)` is called in the caller's process as each drive
finishes (in completion order), with fn's return value or the exception that drive raised (a
`DriveFailed` when the worker itself died): one failed drive never stops the others. The same function
runs everywhere, so results do not depend on where it ran (tests/test_ray.py checks replay and index).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from perception.errors import ConfigError, PerceptionError


class DriveFailed(PerceptionError):
    """The worker running a drive died or could not return its result."""


def map_drives(fn: Callable[..., Any], drives: Sequence[Path], args: tuple = (), *,
               on_result: Callable[[int, Any], None], jobs: int | None = 1, use_ray: bool = False,
               ray_address: str | None = None, progress: Callable[[int, Any], None] | None = None) -> None:
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")

    def done(i: int, outcome: Any) -> None:
        on_result(i, outcome)
        if progress is not None:
            progress(i, outcome)

    if use_ray:
        _map_ray(fn, drives, args, done, ray_address, jobs)
    elif (jobs or os.cpu_count() or 1) == 1 or len(drives) == 1:
        for i, drive in enumerate(drives):
            done(i, _call(fn, drive, args))
    else:
        with ProcessPoolExecutor(max_workers=min(jobs or os.cpu_count() or 1, len(drives))) as pool:
            pending: dict[Future, int] = {pool.submit(_call, fn, d, args): i for i, d in enumerate(drives)}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = pending.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as e:  # noqa: BLE001 - a worker that died fails its drive only
                        outcome = DriveFailed(f"{drives[i]}: worker died: {e!r}")
                    done(i, outcome)


def _call(fn: Callable[..., Any], drive: Path, args: tuple) -> Any:
    """fn's result, or the exception it raised (returned, so that it travels back like a result)."""
    try:
        return fn(drive, *args)
    except Exception as e:  # noqa: BLE001 - reported with its drive; the others go on
        return e if isinstance(e, PerceptionError) else DriveFailed(f"{drive}: {type(e).__name__}: {e}")


def ray_init(address: str | None, num_cpus: int | None = None) -> Any:
    """Connects to the cluster at `address` ("auto": the one this machine belongs to), or starts a local
    one with `num_cpus` when address is None. Reuses a connection already made in this process."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'perception[ray]'") from None
    if not ray.is_initialized():
        if address is None:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(f"--ray {address}: cannot connect to a Ray cluster: {e}") from None
    return ray


def _map_ray(fn: Callable[..., Any], drives: Sequence[Path], args: tuple, done: Callable[[int, Any], None],
             address: str | None, jobs: int | None) -> None:
    ray = ray_init(address, jobs)
    task = ray.remote(num_cpus=1, max_retries=0)(_call)
    # drive paths travel as strings: the workers must see the same path (shared storage, docs/fleet.md)
    pending = {task.remote(fn, Path(d), args): i for i, d in enumerate(drives)}
    while pending:
        finished, _ = ray.wait(list(pending), num_returns=1)
        for ref in finished:
            i = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - worker crash, node lost: that drive fails, the others go on
                outcome = DriveFailed(f"{drives[i]}: Ray task failed: {type(e).__name__}: {e}")
            done(i, outcome)
