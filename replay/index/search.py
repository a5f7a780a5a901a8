"""Searching the index: a query (query.py) or SQL -> time windows; query by example (cosine on embeddings)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perception.errors import ConfigError
from replay.index.query import parse, windows_sql
from replay.index.store import connect

DEFAULT_GAP_S = 0.5
LIKE_SEPARATION_S = 2.0   # query by example: at most one moment per drive within this


@dataclass(frozen=True)
class Hit:
    drive: str
    start_ns: int
    end_ns: int
    start_s: float        # from the drive's first frame set
    end_s: float
    frame_sets: int
    why: str


def search(db: str | Path, query: str | None = None, *, sql: str | None = None, gap_s: float = DEFAULT_GAP_S,
           limit: int | None = None) -> list[Hit]:
    """Windows where `query` holds, or where the rows of `sql` (any SELECT returning `drive`, `t_ns` and
    optionally `why`) fall. Consecutive matching frame sets closer than `gap_s` form one window."""
    if (query is None) == (sql is None):
        raise ConfigError("search: give a query or --sql, not both")
    if sql is not None:
        frames_sql, min_seconds, params = _user_sql(sql), 0.0, []
    else:
        parsed = parse(query)
        frames_sql, min_seconds, params = parsed.frames_sql, parsed.min_seconds, parsed.params
    con = connect(db, read_only=True)
    try:
        text = windows_sql(frames_sql, gap_s, min_seconds) + (f" LIMIT {int(limit)}" if limit else "")
        rows = _run(con, text, params, sql)
        starts = dict(con.execute("SELECT drive, start_ns FROM drives").fetchall())
    finally:
        con.close()
    return [Hit(d, int(a), int(b), (a - starts.get(d, a)) / 1e9, (b - starts.get(d, a)) / 1e9, int(n), why or "")
            for d, a, b, n, why in rows]


def _user_sql(sql: str) -> str:
    body = sql.strip().rstrip(";")
    if not re.match(r"(?is)^\s*(select|with)\b", body):
        raise ConfigError("--sql: give one SELECT (or WITH ... SELECT) returning drive, t_ns [, why]")
    return f"SELECT drive, t_ns, CAST(why AS VARCHAR) AS why FROM (SELECT *, NULL AS why FROM ({body}))" \
        if not re.search(r"(?i)\bwhy\b", body) else f"SELECT drive, t_ns, CAST(why AS VARCHAR) AS why FROM ({body})"


def _run(con: Any, text: str, params: list, sql: str | None) -> list[tuple]:
    import duckdb

    try:
        return con.execute(text, params).fetchall()
    except duckdb.Error as e:
        where = "--sql" if sql is not None else "query"
        raise ConfigError(f"{where}: {str(e).splitlines()[0]}") from None


def parse_moment(text: str) -> tuple[str, float]:
    """`DRIVE@SECONDS` (seconds from the drive's first frame set)."""
    drive, sep, seconds = text.rpartition("@")
    if not sep or not drive:
        raise ConfigError(f"--like {text!r}: write DRIVE@SECONDS, e.g. lead_brake-1@2.5")
    try:
        return drive, float(seconds.removesuffix("s"))
    except ValueError:
        raise ConfigError(f"--like {text!r}: {seconds!r} is not a number of seconds") from None


def like(db: str | Path, moment: str, *, k: int = 10) -> list[Hit]:
    """The `k` moments most similar to DRIVE@SECONDS (cosine of the embeddings, in DuckDB), best first; the
    example's own drive is searched too, except within LIKE_SEPARATION_S of the example."""
    drive, seconds = parse_moment(moment)
    con = connect(db, read_only=True)
    try:
        row = con.execute("SELECT start_ns, has_embeddings FROM drives WHERE drive = ?", [drive]).fetchone()
        if row is None:
            known = [d for (d,) in con.execute("SELECT drive FROM drives ORDER BY drive LIMIT 10").fetchall()]
            raise ConfigError(f"--like: no drive {drive!r} in {db} (drives: {', '.join(known) or 'none'})")
        if not row[1]:
            raise ConfigError(f"--like: drive {drive!r} has no embeddings (it was indexed from a run file; "
                              "index the drive itself)")
        t_ns = row[0] + int(seconds * 1e9)
        example = con.execute("SELECT t_ns, vec FROM embeddings WHERE drive = ? ORDER BY abs(t_ns - ?) LIMIT 1",
                              [drive, t_ns]).fetchone()
        sep = int(LIKE_SEPARATION_S * 1e9)
        rows = con.execute(
            "SELECT e.drive, e.t_ns, list_cosine_similarity(e.vec, ?::FLOAT[]) AS sim FROM embeddings e "
            "WHERE NOT (e.drive = ? AND abs(e.t_ns - ?) < ?) ORDER BY sim DESC, e.drive, e.t_ns LIMIT ?",
            [example[1], drive, example[0], sep, 50 * k]).fetchall()
        starts = dict(con.execute("SELECT drive, start_ns FROM drives").fetchall())
    finally:
        con.close()
    picked: list[tuple[str, int, float]] = []
    for d, t, sim in rows:  # best first, one moment per LIKE_SEPARATION_S of a drive
        if all(d != pd or abs(t - pt) >= sep for pd, pt, _ in picked):
            picked.append((d, int(t), float(sim)))
        if len(picked) == k:
            break
    return [Hit(d, t, t, (t - starts[d]) / 1e9, (t - starts[d]) / 1e9, 1, f"cosine {sim:.4f}")
            for d, t, sim in picked]
