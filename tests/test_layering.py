"""The core never imports the replay harness: a vehicle build can leave `replay/` out."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the CLI command modules wire the harness's commands (replay, synth, the demo drive) into `perception`
HARNESS_WIRING = ROOT / "perception" / "commands"


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_no_replay_import_under_perception_outside_the_commands():
    offenders = []
    for path in sorted((ROOT / "perception").rglob("*.py")):
        if HARNESS_WIRING in path.parents:
            continue
        for line, module in _imported_modules(path):
            if module == "replay" or module.startswith("replay."):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offenders, "the core imports the harness:\n" + "\n".join(offenders)


def test_the_check_sees_imports_inside_functions(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from replay.synth import cached_drive\n")
    assert _imported_modules(probe) == [(2, "replay.synth")]
