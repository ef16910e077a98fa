#!/usr/bin/env python
"""Pack onnxruntime-gpu into chunks that fit one device call each (issue 15).

    python bench/pack_ort_gpu.py --python 3.12      # the H200 machine's Python: its wheel, from PyPI
    python bench/pack_ort_gpu.py                    # this interpreter's installed package

The device machine has the CPU onnxruntime only and no network; a call carries at most
64 MiB (the working tree included), but ignored files stay there while it is warm. So
the package travels as a tar split into chunks, one chunk per call, and
``bench/unpack_ort_gpu.py`` reassembles it there (bench/README.md: the sequence of calls).

What is packed is ``onnxruntime/`` and its ``.dist-info`` folder, as a site folder lays
them out. For the interpreter running this script that is the installed package (found
through its distribution's RECORD). For another Python (wheels are per Python version)
it is the wheel of the *same* onnxruntime-gpu version for that Python, downloaded with
``pip download`` into the output folder. Chunks are at most 60 MiB, less when the
working tree that travels with each call would push a call over 64 MiB.

Output (the folder is git-ignored): ``<out>/ort.tar[.xz].partNN`` and
``<out>/manifest.json`` (the version, the Python it is for, each chunk's size and sha256).
Exit 0 packed, 2 bad input (a one-line reason on stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import json
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIB = 1 << 20
CALL_LIMIT = 64 * MIB  # what one device call may carry, the working tree included
MAX_CHUNK = 60 * MIB
MARGIN = 4 * MIB  # the manifest, and the tree growing by a few commits between packing and the calls
DIST = "onnxruntime-gpu"
MANIFEST = "manifest.json"
PART = "ort.tar{ext}.part{i:02d}"


class PackError(Exception):
    """Bad input: the message is the one line the user sees."""


def travel_bytes(root: Path) -> int:
    """Bytes of what a device call sends besides what it carries: tracked and untracked-not-ignored files."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "-co", "--exclude-standard"],
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 8 * MIB  # not a git checkout: assume a tree of this project's size
    total = 0
    for name in out.decode().split("\0"):
        p = root / name
        if name and p.is_file():
            total += p.stat().st_size
    return total


def chunk_size(root: Path, requested_mib: float | None) -> int:
    room = CALL_LIMIT - travel_bytes(root) - MARGIN
    size = int(requested_mib * MIB) if requested_mib else min(MAX_CHUNK, room)
    if size < MIB:
        raise PackError(f"chunk size {size / MIB:.1f} MiB: the working tree leaves too little room under "
                        f"64 MiB per call; ignore or remove large untracked files, or pass --chunk-mib.")
    if size > room:
        raise PackError(f"--chunk-mib {requested_mib}: with the working tree's {travel_bytes(root) / MIB:.1f} "
                        f"MiB a call would carry more than 64 MiB; use at most {room // MIB}.")
    return size


def _wanted(rel: str) -> bool:
    top = rel.split("/", 1)[0]
    return (top == "onnxruntime" or top.endswith(".dist-info")) and "__pycache__" not in rel


def installed_members(dist: importlib.metadata.Distribution) -> Iterator[tuple[str, Path]]:
    """(name in the archive, file) for the installed package: its RECORD, minus scripts and caches."""
    for f in dist.files or []:
        rel = f.as_posix()
        if not rel.startswith("../") and _wanted(rel):
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                yield rel, path


def download_wheel(version: str, python: str, dest: Path) -> Path:
    """The onnxruntime-gpu ``version`` wheel for CPython ``python`` on x86-64 Linux (pip download)."""
    dest.mkdir(parents=True, exist_ok=True)
    tag = f"cp{python.replace('.', '')}"
    found = sorted(dest.glob(f"onnxruntime_gpu-{version}-{tag}-*.whl"))
    if found:
        return found[-1]
    platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                             "manylinux2014_x86_64") for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           python, "--implementation", "cp", *platforms, "-d", str(dest), f"{DIST}=={version}"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob(f"onnxruntime_gpu-{version}-{tag}-*.whl"))
    if res.returncode != 0 or not found:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise PackError(f"pip download {DIST}=={version} for Python {python} failed ({last}); "
                        f"check that PyPI is reachable and has that version for that Python.")
    return found[-1]


def write_tar(dst: Path, members: Iterator[tuple[str, Path | bytes]], compress: str) -> None:
    mode = "w:xz" if compress == "xz" else "w"
    with tarfile.open(dst, mode) as tar:
        for name, src in members:
            if isinstance(src, Path):
                tar.add(src, arcname=name, recursive=False)
            else:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(src), 0o644, 0
                tar.addfile(info, io.BytesIO(src))


def wheel_members(wheel: Path) -> Iterator[tuple[str, bytes]]:
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            if not info.is_dir() and _wanted(info.filename):
                yield info.filename, z.read(info)


def split(src: Path, size: int, out: Path, ext: str) -> list[dict]:
    chunks = []
    with open(src, "rb") as f:
        i = 0
        while True:
            data = f.read(size)
            if not data:
                break
            name = PART.format(ext=ext, i=i)
            (out / name).write_bytes(data)
            chunks.append({"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
            i += 1
    return chunks


def pack(out: Path, python: str | None = None, compress: str = "xz", chunk_mib: float | None = None,
         root: Path = ROOT) -> dict:
    """Write the chunks and the manifest into ``out``; return the manifest."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    python = python or here
    if not python.replace(".", "").isdigit() or python.count(".") != 1:
        raise PackError(f"--python {python}: give a version as MAJOR.MINOR, e.g. 3.12.")
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        raise PackError(f"{DIST} is not installed in this environment ({sys.executable}); "
                        f"install it (pip install {DIST}) and run again.") from None
    size = chunk_size(root, chunk_mib)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("ort.tar*.part*"), out / MANIFEST]:  # a previous pack's chunks must not mix in
        old.unlink(missing_ok=True)
    ext = ".xz" if compress == "xz" else ""
    archive = out / f"ort.tar{ext}"
    if python == here:
        source = f"installed ({Path(str(dist.locate_file('onnxruntime'))).parent})"
        members: Iterator = installed_members(dist)
    else:
        wheel = download_wheel(dist.version, python, out / "wheels")
        source = f"wheel {wheel.name}"
        members = wheel_members(wheel)
    write_tar(archive, members, compress)
    whole = hashlib.sha256()
    with open(archive, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            whole.update(block)
    chunks = split(archive, size, out, ext)
    manifest = {"package": DIST, "version": dist.version, "python": python, "source": source,
                "compress": compress, "bytes": archive.stat().st_size, "sha256": whole.hexdigest(),
                "chunk_bytes": size, "chunks": chunks}
    archive.unlink()
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=None, help="the target's Python, MAJOR.MINOR (default: this one's; "
                                                   "the H200 machine's is 3.12)")
    ap.add_argument("--out", type=Path, default=ROOT / ".ortgpu", help="output folder (default: .ortgpu/)")
    ap.add_argument("--compress", choices=("xz", "none"), default="xz",
                    help="xz: fewer chunks (one call less), minutes to pack; none: seconds to pack")
    ap.add_argument("--chunk-mib", type=float, default=None, help="chunk size (default: as large as fits)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        m = pack(args.out, args.python, args.compress, args.chunk_mib)
    except PackError as e:
        print(f"pack_ort_gpu: {e}", file=sys.stderr)
        return 2
    rel = args.out.resolve()
    rel = rel.relative_to(ROOT) if rel.is_relative_to(ROOT) else rel
    print(f"{m['package']} {m['version']} for Python {m['python']} ({m['source']}): {m['bytes'] / MIB:.1f} MiB "
          f"in {len(m['chunks'])} chunk(s) of at most {m['chunk_bytes'] / MIB:.1f} MiB, "
          f"{time.perf_counter() - t0:.0f} s")
    for i, c in enumerate(m["chunks"]):
        print(f"call {i + 1}: carry [\"{rel}/{MANIFEST}\", \"{rel}/{c['file']}\"]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
