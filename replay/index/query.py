"""The search language, compiled to SQL over the index; hits merged into time windows (docs/fleet.md).

A query is words joined by spaces or `and` (all must hold in one frame set):

    pedestrian ahead range<20 and brake>=prepare      one tracked pedestrian ahead closer than 20 m while
                                                      the brake hint is at least `prepare`
    cut_in | crossing | lead_brake | miss | brake_onset | prepare_onset      a derived event (tables.EVENT_KINDS)
    camera stale | camera lost [CAMERA]               camera events (optionally of one camera)
    ttc<2 for>=0.5s                                   an object with TTC under 2 s, for at least 0.5 s
    truth pedestrian ahead range<20                   the same on the ground-truth objects
    truth crossing | output crossing                  an event from one source only

Object words (one object must satisfy all of them): a class (`car truck pedestrian cyclist vehicle vru`),
`ahead` (x > 0, |y| <= 2.5 m), `coasting`, and comparisons `FIELD OP NUMBER` on range, ttc, x, y, vx, vy,
speed (|v| relative to the ego), score, age; `camera=NAME`. Frame words: `brake OP none|prepare|brake`,
`lead_ttc`, `lead_range`, `speed_cap`, `free_distance`, `confidence` comparisons. `for>=Ns` keeps windows
lasting at least N seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from perception.errors import ConfigError
from replay.index.extract import BRAKE_LEVEL
from replay.index.tables import EVENT_KINDS

AHEAD_HALF_WIDTH_M = 2.5
CLASS_WORDS = {"car": ("car",), "truck": ("truck",), "pedestrian": ("pedestrian",), "cyclist": ("cyclist",),
               "vehicle": ("car", "truck"), "vru": ("pedestrian", "cyclist")}
OBJECT_FIELDS = {"range": "range_m", "ttc": "ttc_s", "x": "x", "y": "y", "vx": "vx", "vy": "vy", "score": "score",
                 "age": "age_s", "speed": "sqrt(vx * vx + vy * vy)"}
TRUTH_FIELDS = {"range": "range_m", "x": "x", "y": "y", "vx": "vx", "vy": "vy", "speed": "sqrt(vx * vx + vy * vy)"}
HINT_FIELDS = {"lead_ttc": "lead_ttc_s", "lead_range": "lead_range_m", "speed_cap": "speed_cap_mps",
               "free_distance": "free_distance_m", "confidence": "confidence"}
COMPARISON = re.compile(r"^([a-z_]+)(<=|>=|!=|=|<|>)(.+)$")


@dataclass
class Query:
    """A parsed query: the SQL of its matching frame sets (drive, t_ns, why) and the minimum duration."""
    text: str
    frames_sql: str
    min_seconds: float = 0.0
    params: list = field(default_factory=list)


def _number(word: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"query: {word!r}: {value!r} is not a number") from None


def _words(text: str) -> list[str]:
    # "range < 20" and "range<20" are the same word
    text = re.sub(r"\s*(<=|>=|!=|=|<|>)\s*", r"\1", text.strip().lower())
    return [w for w in text.split() if w != "and"]


def parse(text: str) -> Query:
    words = _words(text)
    if not words:
        raise ConfigError("query: empty (try `cut_in`, `pedestrian ahead range<20`, `camera stale`)")
    obj: list[str] = []
    truth_obj: list[str] = []
    frame: list[str] = []
    event_clauses: list[tuple[str, str | None, str | None]] = []
    min_seconds = 0.0
    source: str | None = None
    params: list = []
    i = 0
    while i < len(words):
        w = words[i]
        i += 1
        if w in ("truth", "output"):
            source = w
            continue
        if w == "camera" and i < len(words) and words[i] in ("stale", "lost"):
            kind = f"camera_{words[i]}"
            i += 1
            camera = None
            if i < len(words) and COMPARISON.match(words[i]) is None and not _is_keyword(words[i]):
                camera, i = words[i], i + 1
            event_clauses.append((kind, source, camera))
            continue
        if w in EVENT_KINDS:
            event_clauses.append((w, source, None))
            continue
        target = truth_obj if source == "truth" else obj
        if w in CLASS_WORDS:
            names = ", ".join(f"'{c}'" for c in CLASS_WORDS[w])
            target.append(f"cls IN ({names})")
            continue
        if w == "ahead":
            target.append(f"x > 0 AND abs(y) <= {AHEAD_HALF_WIDTH_M}")
            continue
        if w == "coasting" and source != "truth":
            obj.append("coasting")
            continue
        m = COMPARISON.match(w)
        if m is None:
            raise ConfigError(f"query: unknown word {w!r} (classes: {', '.join(CLASS_WORDS)}; events: "
                              f"{', '.join(EVENT_KINDS)}; fields: {', '.join(sorted({*OBJECT_FIELDS, *HINT_FIELDS}))}, "
                              "brake, camera, for)")
        name, op, value = m.groups()
        op = "<>" if op == "!=" else op
        if name == "for":
            if op not in (">=", ">"):
                raise ConfigError(f"query: {w!r}: use for>=SECONDS (e.g. for>=0.5s)")
            min_seconds = _number(w, value.removesuffix("s"))
        elif name == "brake":
            if value not in BRAKE_LEVEL:
                raise ConfigError(f"query: {w!r}: brake is one of {', '.join(BRAKE_LEVEL)}")
            frame.append(f"h.brake_level {op} {BRAKE_LEVEL[value]}")
        elif name in HINT_FIELDS:
            frame.append(f"h.{HINT_FIELDS[name]} {op} {_number(w, value)}")
        elif name == "camera" and source != "truth":
            obj.append(f"camera {op} ?")
            params.append(value)
        elif source == "truth" and name in TRUTH_FIELDS:
            truth_obj.append(f"{TRUTH_FIELDS[name]} {op} {_number(w, value)}")
        elif source != "truth" and name in OBJECT_FIELDS:
            obj.append(f"{OBJECT_FIELDS[name]} {op} {_number(w, value)}")
        else:
            raise ConfigError(f"query: {w!r}: no field {name!r}"
                              + (" on ground truth objects" if source == "truth" else ""))
    return Query(text, _frames_sql(obj, truth_obj, frame, event_clauses, params), min_seconds, params)


def _is_keyword(word: str) -> bool:
    return word in EVENT_KINDS or word in CLASS_WORDS or word in ("truth", "output", "ahead", "camera", "coasting")


def _frames_sql(obj: list[str], truth_obj: list[str], frame: list[str],
                events: list[tuple[str, str | None, str | None]], params: list) -> str:
    """SELECT drive, t_ns, why FROM ... : the frame sets where every clause holds."""
    joins, whys = [], []
    ordered_params: list = []
    if obj:
        # the nearest matching object names the frame set (strings are built per frame set, not per object)
        joins.append("JOIN (SELECT drive, t_ns, arg_min(cls, range_m) AS cls, arg_min(track_id, range_m) AS id, "
                     "min(range_m) AS range_m, count(*) AS n FROM objects WHERE " + " AND ".join(obj)
                     + " GROUP BY drive, t_ns) o USING (drive, t_ns)")
        whys.append("o.cls || ' ' || o.id || ' at ' || round(o.range_m, 1) || ' m' "
                    "|| CASE WHEN o.n > 1 THEN ' (+' || (o.n - 1) || ')' ELSE '' END")
        ordered_params += params
    if truth_obj:
        joins.append("JOIN (SELECT drive, t_ns, arg_min(cls, range_m) AS cls, arg_min(id, range_m) AS id, "
                     "min(range_m) AS range_m, count(*) AS n FROM truth WHERE " + " AND ".join(truth_obj)
                     + " GROUP BY drive, t_ns) g USING (drive, t_ns)")
        whys.append("'truth ' || g.cls || ' ' || g.id || ' at ' || round(g.range_m, 1) || ' m' "
                    "|| CASE WHEN g.n > 1 THEN ' (+' || (g.n - 1) || ')' ELSE '' END")
    if frame:
        joins.append("JOIN hints h USING (drive, t_ns)")
        whys.append("'brake ' || h.brake")
    where = list(frame)
    for k, (kind, source, camera) in enumerate(events):
        conds = [f"e{k}.drive = f.drive", f"f.t_ns BETWEEN e{k}.start_ns AND e{k}.end_ns", f"e{k}.kind = '{kind}'"]
        if source is not None:
            conds.append(f"e{k}.source = '{source}'")
        if camera is not None:
            conds.append(f"lower(e{k}.camera) = ?")
            ordered_params.append(camera)
        joins.append(f"JOIN events e{k} ON " + " AND ".join(conds))
        whys.append(f"e{k}.detail")
    params[:] = ordered_params
    why = " || '; ' || ".join(f"coalesce({w}, '')" for w in whys) if whys else "''"
    return (f"SELECT f.drive, f.t_ns, {why} AS why FROM frames f " + " ".join(joins)
            + (" WHERE " + " AND ".join(where) if where else ""))


def windows_sql(frames_sql: str, gap_s: float, min_seconds: float) -> str:
    """Merges matching frame sets into windows: consecutive hits of a drive closer than `gap_s` join."""
    gap_ns, min_ns = int(gap_s * 1e9), int(min_seconds * 1e9)
    return f"""
WITH hits AS ({frames_sql}),
marked AS (SELECT *, CASE WHEN lag(t_ns) OVER w IS NULL OR t_ns - lag(t_ns) OVER w > {gap_ns} THEN 1 ELSE 0 END
           AS starts FROM hits WINDOW w AS (PARTITION BY drive ORDER BY t_ns)),
grouped AS (SELECT *, sum(starts) OVER (PARTITION BY drive ORDER BY t_ns ROWS UNBOUNDED PRECEDING) AS grp
            FROM marked)
SELECT drive, min(t_ns) AS start_ns, max(t_ns) AS end_ns, count(DISTINCT t_ns) AS frame_sets,
       arg_min(why, t_ns) AS why
FROM grouped GROUP BY drive, grp HAVING max(t_ns) - min(t_ns) >= {min_ns} ORDER BY drive, start_ns"""
