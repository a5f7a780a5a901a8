"""Scenario search over recorded drives: the DuckDB index, the query language, export (docs/fleet.md)."""
