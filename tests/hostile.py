"""Helpers of the hostile-input suites (tests/test_hostile_*.py).

Every case asserts the exit code, exactly one line on stderr (for refusals), no traceback, and that every
file that existed before the run is byte-identical after it (and no temporary file is left).
In-process (CliRunner) where the behaviour allows; a subprocess only for signals, rlimits and real pipes.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from srp_onnx_cli.main import main

from srp_onnx.io import TEMP_PREFIX


def snapshot(*folders: Path) -> dict[Path, str]:
    """sha256 of every regular file under ``folders`` (links not followed; not FIFOs)."""
    out = {}
    for folder in folders:
        for p in Path(folder).rglob("*"):
            if p.is_file() and not p.is_symlink():
                st = p.stat()  # a huge (sparse) file is compared by size and mtime, not read
                out[p] = hashlib.sha256(p.read_bytes()).hexdigest() if st.st_size < 1 << 26 else \
                    f"{st.st_size}:{st.st_mtime_ns}"
    return out


def assert_unchanged(before: dict[Path, str], *folders: Path) -> None:
    after = snapshot(*folders)
    for p, digest in before.items():
        assert after.get(p) == digest, f"{p} was changed or removed"
    for folder in folders:
        left = [p for p in Path(folder).rglob("*") if p.name.startswith(TEMP_PREFIX)]
        assert not left, f"temporary files left: {left}"


def cli(args, input=None):
    """The CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(main, [os.fspath(a) if isinstance(a, Path) else str(a) for a in args], input=input)


def one_error_line(stderr: str, *needles: str) -> str:
    """The one ``srp-onnx: error:`` line of a refusal: stderr is that line only, no traceback."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("srp-onnx: error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    noise = [ln for ln in lines if not (ln.startswith("srp-onnx: ") or ln.startswith("eval [")
                                         or ln.startswith("calibrating") or ln.startswith("note: "))]
    assert not noise, f"unexpected stderr lines: {noise}"
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def refused(args, *needles: str, code: int = 2) -> str:
    r = cli(args)
    assert r.exit_code == code, (r.exit_code, r.output, r.stderr)
    assert "Traceback" not in r.output
    return one_error_line(r.stderr, *needles)


def run_cli(args, *, cwd: Path | None = None, timeout: float = 60, memory_gib: float | None = None,
            stdin=None, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, optionally under an address-space cap (RLIMIT_AS)."""
    def limit() -> None:
        if memory_gib is not None:
            cap = int(memory_gib * (1 << 30))
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "srp_onnx_cli.main", *map(os.fspath, args)], cwd=cwd,
                          timeout=timeout, preexec_fn=limit, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                          env=env, text=True, errors="replace")
