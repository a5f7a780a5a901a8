"""One task per drive, run in this process, a local process pool, or a Ray cluster (docs/fleet.md).

    map_drives(fn, [(drive_a, out_a), (drive_b, out_b)], on_result=lambda i, outcome: ..., jobs=2)   # local
    map_drives(fn, tasks, on_result=..., use_ray=True, ray_address="auto")                           # Ray

`fn(*task)` (a task's first item is its drive) must be importable by the workers (a module-level function) and return something Ray /
multiprocessing can send back. `on_result(index, outcome)` is called in the caller's process as each drive
finishes (in completion order), with fn's return value or the exception that drive raised (a
`DriveFailed` when the worker itself died): one failed drive never stops the others. The same function
runs everywhere, so results do not depend on where it ran (tests/test_ray.py checks replay and index).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from perception.errors import ConfigError, PerceptionError


class DriveFailed(PerceptionError):
    """The worker running a drive died or could not return its result."""


def map_drives(fn: Callable[..., Any], tasks: Sequence[tuple], *,
               on_result: Callable[[int, Any], None], jobs: int | None = 1, use_ray: bool = False,
               ray_address: str | None = None) -> None:
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    done = on_result
    if use_ray:
        _map_ray(fn, tasks, done, ray_address, jobs)
    elif (jobs or os.cpu_count() or 1) == 1 or len(tasks) == 1:
        for i, task in enumerate(tasks):
            done(i, _call(fn, *task))
    else:
        with ProcessPoolExecutor(max_workers=min(jobs or os.cpu_count() or 1, len(tasks))) as pool:
            pending: dict[Future, int] = {pool.submit(_call, fn, *t): i for i, t in enumerate(tasks)}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = pending.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as e:  # noqa: BLE001 - a worker that died fails its drive only
                        outcome = DriveFailed(f"{tasks[i][0]}: worker died: {e!r}")
                    done(i, outcome)


def _call(fn: Callable[..., Any], drive: Any, *args: Any) -> Any:
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


def _map_ray(fn: Callable[..., Any], tasks: Sequence[tuple], done: Callable[[int, Any], None],
             address: str | None, jobs: int | None) -> None:
    ray = ray_init(address, jobs)
    remote = ray.remote(num_cpus=1, max_retries=0)(_call)
    # paths travel as they are: the workers must see the same paths (shared storage, docs/fleet.md)
    pending = {remote.remote(fn, *t): i for i, t in enumerate(tasks)}
    while pending:
        finished, _ = ray.wait(list(pending), num_returns=1)
        for ref in finished:
            i = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - worker crash, node lost: that drive fails, the others go on
                outcome = DriveFailed(f"{tasks[i][0]}: Ray task failed: {type(e).__name__}: {e}")
            done(i, outcome)
