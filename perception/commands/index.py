"""`perception index`: build / update the scenario-search index (DuckDB) from run files and drives.

    perception index RUNS_OR_DRIVES... --db fleet.duckdb [--parquet DIR] [--runs DIR] [--config NODE.yaml]
                     [--jobs N | --ray [ADDRESS]]

Drives are replayed through the node (lockstep) into run files under --runs, with embeddings of the
engine state; run files are read as they are. Re-indexing a drive replaces its rows (docs/fleet.md).
Exit codes: 0 all indexed, 1 some input failed (the others are indexed), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_DRIVE", help="run files and drives (MCAP)")
    parser.add_argument("--db", required=True, type=Path, help="the DuckDB index file (created when missing)")
    parser.add_argument("--parquet", type=Path, metavar="DIR", help="also write every table as DIR/<table>.parquet")
    parser.add_argument("--runs", type=Path, metavar="DIR", help="where replayed drives' run files go "
                        "(default: <db>.runs/ beside the index)")
    parser.add_argument("--config", type=Path, help="node YAML for replaying drives (default: the node's default)")
    parser.add_argument("--jobs", type=int, default=1, help="drives read in parallel local processes (default 1)")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="spread the drives over a Ray cluster (ADDRESS, 'auto', or none: a local Ray)")


def run(args: argparse.Namespace) -> int:
    from replay.index.indexer import index_paths

    config = None
    if args.config is not None:
        from perception.node.config import load_config

        config = load_config(args.config)

    def show(result) -> None:
        if result.ok:
            events = ", ".join(f"{k} {v}" for k, v in sorted(result.events.items())) or "no events"
            print(f"{result.drive}: {result.frame_sets} frame sets, {events} ({result.seconds:.1f} s)", flush=True)
        else:
            print(f"{result.drive}: FAILED: {result.error}", file=sys.stderr, flush=True)

    results = index_paths(args.paths, args.db, runs_dir=args.runs, config=config, parquet=args.parquet,
                          jobs=args.jobs, use_ray=args.ray is not None,
                          ray_address=None if args.ray in (None, "local") else args.ray, progress=show)
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} of {len(results)} indexed into {args.db}"
          + (f"; tables as Parquet in {args.parquet}" if args.parquet else ""))
    return 1 if failed else 0
