"""`srp-onnx demo` from a built wheel in a fresh virtual environment, run outside the source tree.

The wheel is built offline from a copy of the sources (no build isolation: setuptools is at hand),
installed with --no-deps into a new venv, and the venv sees this environment's third-party packages
through a .pth line (not its editable srp_onnx: .pth files in that folder are not processed, so the
wheel's own srp_onnx is the one imported). The demo finds its sample only if the wheel ships it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("setuptools")
pytest.importorskip("mlxtend")


def _run(args, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=600, **kw)


def test_demo_runs_from_an_installed_wheel(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("srp_onnx", "cli"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
              "-w", tmp_path / "dist", src])
    assert r.returncode == 0, r.stderr
    wheel = next((tmp_path / "dist").glob("srp_onnx-*.whl"))

    venv = tmp_path / "venv"
    r = _run([sys.executable, "-m", "venv", "--without-pip", venv])
    assert r.returncode == 0, r.stderr
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    r = _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel])
    assert r.returncode == 0, r.stderr
    (site / "zz_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([py, "-c", "import srp_onnx; print(srp_onnx.__file__)"], cwd=elsewhere)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # the wheel's copy, not the checkout
    r = _run([venv / "bin" / "srp-onnx", "-q", "demo", "--T", "4", "--device", "cpu"], cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert "sample: mnist_qcfs.onnx" in r.stdout
    srp = next(ln for ln in r.stdout.splitlines() if ln.startswith("SRP (tau=4)"))
    assert float(srp.split()[-1]) > 95.0  # t = 4 on the 1000 held-out MNIST images
