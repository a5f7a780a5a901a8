"""`perception search`: find moments in indexed drives (docs/fleet.md has the query language).

    perception search QUERY --db fleet.duckdb [--gap S] [--sheet hits.html] [--export DIR]
    perception search --sql "SELECT drive, t_ns FROM objects WHERE ..." --db fleet.duckdb
    perception search --like DRIVE@SECONDS --db fleet.duckdb [-k 10]

Lists one window per line: drive, start and end (s from the drive's start), frame sets, why.
`--sheet` writes an HTML contact sheet of thumbnails; `--export DIR` cuts each window into a short MCAP clip
(images, ground truth and the node's outputs) usable as a replay regression case. Exit 0 (hits or none), 2 bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ("query examples:\n  'pedestrian ahead range<20 and brake>=prepare'\n  cut_in\n"
                     "  'ttc<2 for>=0.5s'\n  'camera stale'\n  'truth crossing'\n  lead_brake\n  miss")
    parser.add_argument("query", nargs="*", help="query words (see docs/fleet.md)")
    parser.add_argument("--db", required=True, type=Path, help="the index (perception index ... --db)")
    parser.add_argument("--sql", help="a SELECT returning drive, t_ns [, why] over the index's tables")
    parser.add_argument("--like", metavar="DRIVE@SECONDS", help="the moments most similar to this one")
    parser.add_argument("-k", type=int, default=10, help="--like: how many moments (default 10)")
    parser.add_argument("--gap", type=float, default=0.5, help="merge hits closer than this many seconds (0.5)")
    parser.add_argument("--limit", type=int, help="at most this many windows")
    parser.add_argument("--sheet", type=Path, metavar="HTML", help="write a contact sheet of the hits")
    parser.add_argument("--export", type=Path, metavar="DIR", help="cut each hit into DIR/<drive>_<start>.mcap")
    parser.add_argument("--pad", type=float, default=1.0, help="--export: seconds kept before and after a hit")


def run(args: argparse.Namespace) -> int:
    from perception.errors import ConfigError
    from replay.index.search import like, search

    chosen = sum(bool(x) for x in (args.query, args.sql, args.like))
    if chosen != 1:
        raise ConfigError("search: give exactly one of QUERY, --sql or --like")
    if args.like:
        hits = like(args.db, args.like, k=args.k)
    else:
        hits = search(args.db, " ".join(args.query) if args.query else None, sql=args.sql, gap_s=args.gap,
                      limit=args.limit)
    width = max([len(h.drive) for h in hits] + [5])
    print(f"{'drive'.ljust(width)}  {'start s':>8}  {'end s':>8}  {'frames':>6}  why")
    for h in hits:
        print(f"{h.drive.ljust(width)}  {h.start_s:8.2f}  {h.end_s:8.2f}  {h.frame_sets:6d}  {h.why}")
    print(f"{len(hits)} window{'s' if len(hits) != 1 else ''}")
    if args.sheet is not None:
        from replay.index.sheet import write_contact_sheet

        write_contact_sheet(args.db, hits, args.sheet, title=args.like or args.sql or " ".join(args.query))
        print(f"contact sheet: {args.sheet}")
    if args.export is not None:
        from replay.index.clips import export_clips

        for clip in export_clips(args.db, hits, args.export, pad_s=args.pad):
            print(f"clip: {clip}")
    return 0
