#!/usr/bin/env python
"""Device side of bench/pack_ort_gpu.py: reassemble onnxruntime-gpu, point it at torch's CUDA, prove it loads.

    python3 bench/unpack_ort_gpu.py --have     # after each chunk's call: which chunks are here, verified
    python3 bench/unpack_ort_gpu.py            # after the last one: unpack, write the env file, probe

1. Checks every chunk named in ``<from>/manifest.json`` (size and sha256) and the Python
   version it was packed for; reads the chunks as one stream into ``<site>`` (a private site
   folder, emptied first), then checks the whole archive's sha256.
2. Finds the CUDA and cuDNN libraries that torch's packages bring (every ``nvidia/*/lib``
   folder on this interpreter's path, and ``torch/lib``) and writes ``<from>/ortgpu.env``::

       export PYTHONPATH=<site>:...  LD_LIBRARY_PATH=<nvidia lib folders>:...

   so that ``. .ortgpu/ortgpu.env`` in the same shell makes ``import onnxruntime`` find this
   package before the machine's CPU one, and its CUDA provider find libcudart, libcublas
   and libcudnn when it is loaded (the dynamic loader reads LD_LIBRARY_PATH when a process
   starts, hence a file for the next process rather than a setting in this one).
3. In a fresh interpreter with that environment: imports onnxruntime (it must come from
   ``<site>``), lists the providers, runs a one-node model with ``CUDAExecutionProvider``
   first and checks that the session kept it. One line says what happened.

Exit 0: the CUDA provider loads (or, with --have, the chunks so far are good); 1: it does not
(the line says why); 2: missing or corrupt chunks, or a package for another Python.
Standard library only, plus onnx in the probe.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MANIFEST = "manifest.json"
ENV_FILE = "ortgpu.env"

PROBE = r"""
import sys, numpy as np, onnx
from onnx import TensorProto, helper
import onnxruntime as ort
site = sys.argv[1]
where = ort.__file__
if not where.startswith(site):
    print(f"NO onnxruntime came from {where}, not from {site}"); sys.exit(1)
avail = ort.get_available_providers()
head = f"onnxruntime {ort.__version__} from {site}"
if "CUDAExecutionProvider" not in avail:
    print(f"NO {head} has no CUDA provider (providers: {', '.join(avail)})"); sys.exit(1)
g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 10
so = ort.SessionOptions(); so.log_severity_level = 3
try:
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
except Exception as e:
    print(f"NO {head}: the session failed ({str(e).splitlines()[0][:200]})"); sys.exit(1)
if s.get_providers()[0] != "CUDAExecutionProvider":
    print(f"NO {head}: the CUDA provider did not load (session providers: {', '.join(s.get_providers())})")
    sys.exit(1)
x = np.arange(4, dtype=np.float32)
y = s.run(None, {"x": x})[0]
if not np.array_equal(y, 2 * x):
    print(f"NO {head}: the CUDA provider loaded but computed {y.tolist()} for x + x"); sys.exit(1)
build = getattr(getattr(ort.capi, "build_and_package_info", None), "cuda_version", "?")
print(f"OK CUDAExecutionProvider loads: {head}, built for CUDA {build}; a one-node model ran on it")
"""


class UnpackError(Exception):
    """Missing or corrupt chunks, or a package for another Python: the one line the user sees."""


def read_manifest(src: Path) -> dict:
    path = src / MANIFEST
    if not path.is_file():
        raise UnpackError(f"{path} is missing; carry it with every chunk (bench/README.md).")
    return json.loads(path.read_text())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_chunks(src: Path, manifest: dict) -> tuple[list[str], list[str]]:
    """(good, missing-or-bad) chunk file names."""
    good, bad = [], []
    for c in manifest["chunks"]:
        p = src / c["file"]
        ok = p.is_file() and p.stat().st_size == c["bytes"] and _sha256(p) == c["sha256"]
        (good if ok else bad).append(c["file"])
    return good, bad


class _Joined:
    """The chunks read as one file (so the tar is never written out whole), hashing as it goes."""

    def __init__(self, paths: list[Path]):
        self.paths, self.i, self.f = paths, 0, None
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        out = b""
        while self.i < len(self.paths) and (n < 0 or len(out) < n):
            if self.f is None:
                self.f = open(self.paths[self.i], "rb")  # noqa: SIM115 - closed when exhausted
            data = self.f.read(-1 if n < 0 else n - len(out))
            if not data:
                self.f.close()
                self.f, self.i = None, self.i + 1
                continue
            out += data
        self.hash.update(out)
        return out


def unpack(src: Path, site: Path) -> dict:
    """Verify the chunks in ``src`` and extract the package into ``site`` (emptied first)."""
    m = read_manifest(src)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if m["python"] != here:
        raise UnpackError(f"the package in {src} is for Python {m['python']}, this is {here}; pack it again "
                          f"with bench/pack_ort_gpu.py --python {here}.")
    good, bad = verify_chunks(src, m)
    if bad:
        raise UnpackError(f"{len(bad)} of {len(m['chunks'])} chunk(s) missing or corrupt in {src} "
                          f"({', '.join(bad)}); carry them again (bench/README.md).")
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    stream = _Joined([src / c["file"] for c in m["chunks"]])
    mode = "r|xz" if m["compress"] == "xz" else "r|"
    with tarfile.open(fileobj=stream, mode=mode) as tar:
        try:
            tar.extractall(site, filter="data")  # refuses members that would land outside the site folder
        except tarfile.FilterError as e:
            raise UnpackError(f"{src}: {e}; pack again.") from None
    stream.read()  # the tail after the tar's end marker, so that the hash covers every byte
    if stream.hash.hexdigest() != m["sha256"]:
        raise UnpackError(f"{src}: the reassembled archive's sha256 differs from the manifest's; pack again.")
    return m


def cuda_lib_dirs() -> list[str]:
    """The lib folders of the nvidia-* packages (CUDA runtime, cuBLAS, cuDNN, ...) and torch/lib, if any."""
    dirs: list[str] = []
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        dirs += sorted(str(p) for p in Path(base).glob("*/lib") if p.is_dir())
    spec = importlib.util.find_spec("torch")
    if spec and spec.origin:
        lib = Path(spec.origin).parent / "lib"
        if lib.is_dir():
            dirs.append(str(lib))
    return dirs


def loader_env(site: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the site folder and the CUDA libraries first."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*cuda_lib_dirs(), *filter(None, [env.get("LD_LIBRARY_PATH")])])
    return env


def write_env_file(path: Path, site: Path) -> None:
    env = loader_env(site, {})
    path.write_text("".join(f"export {k}=\"{v}${{{k}:+:${k}}}\"\n" for k, v in env.items()))


def probe(site: Path, timeout: float = 120.0) -> tuple[bool, str]:
    """Whether onnxruntime from ``site`` runs a one-node model on the CUDA provider (a fresh interpreter)."""
    try:
        res = subprocess.run([sys.executable, "-c", PROBE, str(site)], env=loader_env(site),
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"the probe did not finish in {timeout:.0f} s"
    lines = res.stdout.strip().splitlines()
    if lines and lines[-1][:3] in ("OK ", "NO "):
        ok, line = lines[-1].startswith("OK "), lines[-1][3:]
        # onnxruntime logs the loader's own reason (the missing library) on stderr: quote it, not interpret it
        why = [ln.split("with error:", 1)[1].strip() for ln in res.stderr.splitlines() if "with error:" in ln]
        return ok, line if ok or not why else f"{line}; the loader said: {why[0][:160]}"
    err = (res.stderr.strip().splitlines() or ["no output"])[-1]
    return False, f"the probe crashed (exit {res.returncode}: {err[:200]})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="src", type=Path, default=ROOT / ".ortgpu", help="the chunks (default .ortgpu/)")
    ap.add_argument("--site", type=Path, default=None, help="where to unpack (default: <from>/site)")
    ap.add_argument("--have", action="store_true", help="only say which chunks are here and verified")
    ap.add_argument("--no-probe", action="store_true", help="unpack and write the env file, do not probe")
    args = ap.parse_args(argv)
    site = (args.site or args.src / "site").resolve()
    try:
        if args.have:
            m = read_manifest(args.src)
            good, bad = verify_chunks(args.src, m)
            print(f"unpack_ort_gpu: {len(good)} of {len(m['chunks'])} chunk(s) here and verified"
                  + (f"; still to come or corrupt: {', '.join(bad)}" if bad else "; all here"))
            return 0
        m = unpack(args.src, site)
    except UnpackError as e:
        print(f"unpack_ort_gpu: {e}", file=sys.stderr)
        return 2
    write_env_file(args.src / ENV_FILE, site)
    print(f"unpack_ort_gpu: {m['package']} {m['version']} unpacked into {site}; "
          f"environment in {args.src / ENV_FILE}")
    if args.no_probe:
        return 0
    ok, line = probe(site)
    print(f"unpack_ort_gpu: {line}" if ok else f"unpack_ort_gpu: CUDAExecutionProvider does not load: {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
