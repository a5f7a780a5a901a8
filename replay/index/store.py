"""The DuckDB file: create the tables, replace one drive's rows atomically, export Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from perception.errors import ConfigError
from replay.index.extract import Columns
from replay.index.tables import TABLES, ddl


def connect(db: str | Path, *, read_only: bool = False) -> Any:
    """A DuckDB connection to `db` with the index's tables (created when missing)."""
    import duckdb

    db = Path(db)
    if read_only and not db.exists():
        raise ConfigError(f"{db}: no such index (build it with `perception index ... --db {db}`)")
    try:
        con = duckdb.connect(str(db), read_only=read_only)
    except duckdb.Error as e:
        raise ConfigError(f"{db}: cannot open as a DuckDB index: {e}") from None
    if not read_only:
        for table in TABLES:
            con.execute(ddl(table))
    else:
        present = {name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        missing = [t for t in TABLES if t not in present]
        if missing:
            con.close()
            raise ConfigError(f"{db}: not a perception index (missing tables: {', '.join(missing)})")
    return con


def replace_drive(con: Any, drive: str, rows: dict[str, Columns]) -> None:
    """Deletes every row of `drive` and inserts `rows` (table -> columns) in one transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        for table in TABLES:
            con.execute(f"DELETE FROM {table} WHERE drive = ?", [drive])
        for table, columns in rows.items():
            if not len(columns["drive"]):
                continue
            _insert(con, table, columns)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _insert(con: Any, table: str, columns: Columns) -> None:
    con.register("_rows", {k: np.asarray(v) for k, v in columns.items()})
    try:
        if table == "embeddings":  # long format in, one list per frame set stored
            con.execute("INSERT INTO embeddings SELECT drive, t_ns, list(v ORDER BY k)::FLOAT[] FROM _rows "
                        "GROUP BY drive, t_ns")
        else:
            names = list(TABLES[table])
            select = ", ".join(f"CAST({n} AS {TABLES[table][n]})" for n in names)
            con.execute(f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} FROM _rows")
    finally:
        con.unregister("_rows")


def write_parquet(con: Any, folder: str | Path) -> list[Path]:
    """Every table as `<folder>/<table>.parquet` (the same rows, for a data lake)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for table in TABLES:
        path = folder / f"{table}.parquet"
        con.execute(f"COPY (SELECT * FROM {table} ORDER BY ALL) TO '{_sql_path(path)}' (FORMAT PARQUET)")
        written.append(path)
    return written


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")
