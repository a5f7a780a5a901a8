"""`pip install .` (a wheel, not the editable checkout) gives a working node: the wheel is built from a copy
of the checkout (tracked and unignored files), installed into a fresh venv (dependencies come from this venv's site-packages, added
as a plain path so the checkout's editable install is not), and `perception run` runs the bundled model on a
small drive without importing torch."""

from __future__ import annotations

import shutil
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from replay.synth import cached_drive

ROOT = Path(__file__).resolve().parents[1]
DRIVE = dict(seed=5, seconds=1.0, fps=10.0, num_cameras=3, scenario="lead_brake", width=320, height=180)


def _tracked_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.mark.slow
def test_wheel_install_runs_the_node_without_torch(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (the wheel is built from the tracked files)")
    source = _tracked_copy(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel, = (tmp_path / "dist").glob("perception-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")   # a path: its .pth files stay off
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    str(wheel)], check=True, capture_output=True)

    metadata = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.requires('perception'))"],
                              capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    runtime = [r for r in eval(metadata) if "extra ==" not in r]   # noqa: S307 - a list literal we printed
    assert runtime and not any(r.startswith("torch") for r in runtime)

    drive = cached_drive(**DRIVE)
    script = ("import sys\nfrom perception.cli import main\nimport perception\n"
              "print('package', perception.__file__)\n"
              f"rc = main(['run', '--drive', {str(drive)!r}, '--max-frame-sets', '3', '--pacing', 'fast', "
              f"'--quiet', '--endpoint', 'ipc://{tmp_path}/node'])\n"
              "print('torch imported' if 'torch' in sys.modules else 'no torch')\nsys.exit(rc)\n")
    # the installed package only: no PYTHONPATH pointing back into a checkout
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env=clean_env)
    assert result.returncode == 0, result.stderr
    assert f"package {site}" in result.stdout and "no torch" in result.stdout
    assert "3 frame sets" in result.stderr and "model demo-" in result.stderr
    assert "+int8" in result.stderr, "the wheel ships the INT8 copy, the onnxruntime default (setup.py data_files)"

    version = subprocess.run([env_dir / "bin" / "perception", "--version"], capture_output=True, text=True,
                             cwd=tmp_path, env=clean_env)
    assert version.returncode == 0 and version.stdout.startswith("perception 0.")
