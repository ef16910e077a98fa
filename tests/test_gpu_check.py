"""The GPU readiness tools (issue 15), on this machine: no GPU needed.

- ``bench/gpu_check.py --dry-run`` runs every SNN mode on the CPU provider with a tiny
  dyadic net and checks it bit for bit against the CPU step mode and the PyTorch SNN;
  the parity judge and the decision rule are checked on made-up measurements.
- ``bench/pack_ort_gpu.py`` + ``bench/unpack_ort_gpu.py``: the installed onnxruntime-gpu,
  packed into chunks and unpacked into another folder, imports from there alone and lists
  the CUDA provider; a corrupt chunk or a package for another Python is refused.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402
import pack_ort_gpu  # noqa: E402
import unpack_ort_gpu  # noqa: E402


def _run(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)


# -- gpu_check ---------------------------------------------------------------------------------------


def test_dry_run_checks_every_mode_bit_for_bit(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "GPU_RESULTS.md"
    res = _run("gpu_check.py", "--dry-run", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.with_suffix(".json").read_text())
    (net,) = data["nets"]
    assert net["dyadic"] and not net["notes"]
    rows = net["parity"]
    modes = {p["mode"] for p in rows}
    assert modes == {*gpu_check.MODES, gpu_check.TORCH}
    assert all(p["logits_equal"] and p["logit_diff"] == 0 for p in rows)
    counted = [p for p in rows if p["spikes"]]
    assert {p["mode"] for p in counted} == set(gpu_check.MODES)
    assert all(p["spike_mismatch"] == 0 and p["neurons"] > 0 for p in counted)
    assert {(t["T"], t["B"]) for t in net["timing"]} == {(8, 1), (8, 4)}
    text = out.read_text()
    assert "All dyadic checks bit for bit." in text and gpu_check.DECISION_RULE in text


def _result(per_image: dict[str, dict[int, float]], fold: float | None = None, **parity) -> dict:
    """A made-up result: seconds per image of each mode at batch 1, 32, 256 (T 8), the fold floor at batch 32."""
    timing = [{"T": 8, "B": B, "s": {k: v[B] * B for k, v in per_image.items()}} for B in (1, 32, 256)]
    p = {"mode": "step", "T": 8, "B": 32, "spikes": True, "logits_equal": True, "logit_diff": 0.0,
         "spike_mismatch": 0, "neurons": 10, **parity}
    return {"name": "net", "dyadic": True, "parity": [p], "timing": timing, "torch_on_cuda": True,
            "fold_floor": [] if fold is None else [{"T": 8, "B": 32, "batch": 384, "s": fold}]}


FLAT = {1: 1e-3, 32: 1e-3, 256: 1e-3}


def test_parity_judge_flags_a_single_differing_spike_count():
    assert gpu_check.parity_failures([_result({"step": FLAT})]) == []
    bad = gpu_check.parity_failures([_result({"step": FLAT}, spike_mismatch=1)])
    assert len(bad) == 1 and "1 spike counts differ" in bad[0]
    assert gpu_check.parity_failures([_result({"step": FLAT}, logits_equal=False, logit_diff=0.5)])
    sample = dict(_result({"step": FLAT}, logits_equal=False, logit_diff=0.5), dyadic=False)
    assert gpu_check.parity_failures([sample]) == []  # not dyadic: reported, not judged


@pytest.mark.parametrize("fold, verdict", [(10e-3, "is worth building"), (20e-3, "is worth building"),
                                           (25e-3, "undecided"), (30e-3, "is not worth building")])
def test_decision_rule_reads_the_measurements(fold, verdict):
    # step: 3x the CUDA graph's time per image at batch 1 only; every mode equally fast per image at 32 and 256
    got = gpu_check.decide([_result({"step": {1: 3e-3, 32: 1e-3, 256: 1e-3}, "unrolled + CUDA graph": FLAT},
                                    fold=fold)])
    assert "net, batch 1: step / CUDA graph = 3.00x (max over T): launch overhead dominates" in got
    assert "net, batch 32: step / CUDA graph = 1.00x (max over T): launch overhead does not dominate" in got
    assert any("at batch 1 costs 1.0x" in v and "occupancy does not dominate" in v for v in got)
    # the fastest mode takes 32 ms at batch 32, the fold floor 10 to 30 ms: 3.2x down to 1.07x
    assert verdict in got[-1] and got[-1].startswith("net, T 8, batch 32: fastest SNN mode / fold floor")
    slow_small = gpu_check.decide([_result({"unrolled + CUDA graph": {1: 5e-3, 32: 1e-3, 256: 1e-3}})])
    assert any("at batch 1 costs 5.0x" in v and "occupancy dominates" in v for v in slow_small)
    assert gpu_check.decide([dict(_result({}), timing=[])]) == []


def test_committed_results_carry_the_decision_rule():
    text = (BENCH / "GPU_RESULTS.md").read_text()
    assert gpu_check.DECISION_RULE in text
    if "not run yet" in text.splitlines()[0]:
        assert text == gpu_check.render_not_run()


# -- pack / unpack ----------------------------------------------------------------------------------

def _installed() -> bool:
    try:
        importlib.metadata.distribution(pack_ort_gpu.DIST)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _installed(), reason="onnxruntime-gpu is not installed here")
def test_packed_onnxruntime_gpu_unpacks_elsewhere_and_lists_the_cuda_provider(tmp_path):
    chunks, site = tmp_path / "chunks", tmp_path / "elsewhere" / "site"
    res = _run("pack_ort_gpu.py", "--compress", "none", "--out", str(chunks))
    assert res.returncode == 0, res.stderr
    m = json.loads((chunks / "manifest.json").read_text())
    assert len(m["chunks"]) >= 2 and all(c["bytes"] <= 60 * 2 ** 20 for c in m["chunks"])
    assert max(c["bytes"] for c in m["chunks"]) + pack_ort_gpu.travel_bytes(ROOT) < 64 * 2 ** 20
    assert f"call {len(m['chunks'])}: carry" in res.stdout
    res = _run("unpack_ort_gpu.py", "--from", str(chunks), "--site", str(site), "--no-probe")
    assert res.returncode == 0, res.stderr
    probe = ("import onnxruntime as o, sys; assert o.__file__.startswith(sys.argv[1]), o.__file__; "
             "print(o.__version__, 'CUDAExecutionProvider' in o.get_available_providers())")
    env = unpack_ort_gpu.loader_env(site, {"PATH": "/usr/bin:/bin"})  # this folder alone, for onnxruntime
    got = subprocess.run([sys.executable, "-c", probe, str(site)], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert got.returncode == 0, got.stderr[-2000:]
    assert got.stdout.split() == [m["version"], "True"]
    env_file = (chunks / unpack_ort_gpu.ENV_FILE).read_text()
    assert f'export PYTHONPATH="{site.resolve()}' in env_file and "LD_LIBRARY_PATH" in env_file
    # a flipped byte in one chunk: reported, and nothing is unpacked from it
    with open(chunks / m["chunks"][1]["file"], "r+b") as f:
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 1]))
    res = _run("unpack_ort_gpu.py", "--from", str(chunks), "--have")
    assert res.returncode == 0 and f"{len(m['chunks']) - 1} of {len(m['chunks'])}" in res.stdout
    res = _run("unpack_ort_gpu.py", "--from", str(chunks), "--site", str(site), "--no-probe")
    assert res.returncode == 2 and m["chunks"][1]["file"] in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not _installed(), reason="onnxruntime-gpu is not installed here")
def test_a_wheel_for_another_python_is_packed_and_refused_here(tmp_path):
    out = tmp_path / "chunks"
    version = importlib.metadata.version(pack_ort_gpu.DIST)
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    with zipfile.ZipFile(wheels / f"onnxruntime_gpu-{version}-cp399-cp399-manylinux_2_28_x86_64.whl", "w") as z:
        z.writestr("onnxruntime/__init__.py", "__version__ = 'fake'\n")
        z.writestr(f"onnxruntime_gpu-{version}.dist-info/METADATA", "Name: onnxruntime-gpu\n")
        z.writestr("onnxruntime_gpu.data/scripts/tool", "not packed\n")
    m = pack_ort_gpu.pack(out, python="3.99", compress="xz")
    assert m["python"] == "3.99" and m["source"].startswith("wheel ") and len(m["chunks"]) == 1
    site = tmp_path / "site"
    res = _run("unpack_ort_gpu.py", "--from", str(out), "--site", str(site))
    assert res.returncode == 2 and "for Python 3.99" in res.stderr and not site.exists()
    # the same archive, declared for this Python, unpacks exactly the package's files
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    (out / "manifest.json").write_text(json.dumps(dict(m, python=here)))
    unpack_ort_gpu.unpack(out, site)
    files = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    assert files == ["onnxruntime/__init__.py", f"onnxruntime_gpu-{version}.dist-info/METADATA"]


def test_bad_python_version_is_one_line_exit_2(tmp_path):
    res = _run("pack_ort_gpu.py", "--python", "three", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "--python three" in res.stderr and "Traceback" not in res.stderr
