"""A new user's install: the built wheel alone, in a fresh virtual environment, runs the demo.

The wheel is built from a copy of the package's sources (so nothing of the clone can leak in),
installed with `--no-deps` into a new venv whose only link to the dependencies is a `.pth`
line naming this environment's site-packages (the editable install of embetter there is not
activated: `.pth` files are only processed in site directories). `embetter demo` then has to
find its dataset and its model inside installed packages, offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd, **kwargs):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "embetter", src / "embetter",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    # No build isolation: the build backend (setuptools) is the one installed here, offline.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--quiet", "-w", dist, src], timeout=300)
    (found,) = dist.glob("embetter-*.whl")
    return found


def test_the_wheel_ships_the_dataset(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for data in ("support_inbox.csv", "support_inbox.jsonl", "README.md"):
        assert f"embetter/datasets/{data}" in names


def test_demo_runs_from_the_installed_wheel_alone(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
          "--no-index", "--quiet", wheel], timeout=300)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
                .stdout.strip())
    (site / "_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    home = tmp_path / "home"  # an empty folder: no source tree beside the command
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg")
    where = _run([python, "-c", "import embetter, embetter.datasets as d; "
                  "print(embetter.__file__); print(d.__file__)"], cwd=home, env=env).stdout
    for line in where.splitlines():
        assert Path(line).is_relative_to(env_dir), where

    result = _run([env_dir / "bin" / "embetter", "demo", "--out", "plots"], cwd=home, env=env,
                  timeout=1200)
    out = result.stdout
    assert "the bundled support inbox" in out, out
    for row in ("raw all-MiniLM-L6-v2", "FeedForwardTuner", "ContrastiveTuner", "LogReg"):
        assert row in out, out
    for name in ("raw", "feedforward", "contrastive"):
        assert (home / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
