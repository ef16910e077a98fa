"""`srp-onnx eval`: the protocol, the data formats, the JSON, the errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image
from srp_onnx_cli.main import main

from srp_onnx.data import METADATA_KEY, PRESETS

torch = pytest.importorskip("torch")
import nets

N_IMG = 24


@pytest.fixture(scope="module")
def cifar_model(tmp_path_factory) -> Path:
    """A random-weight 32x32 RGB QCFS net with CIFAR-10 preprocessing in its metadata."""
    torch.manual_seed(0)
    model = nets.VGGish(in_ch=3, size=32, classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nets.QCFS):
                m.up.fill_(1.0)
    path = nets.export(model, tmp_path_factory.mktemp("m") / "cifar.onnx", (3, 32, 32))
    m = onnx.load(str(path))
    m.metadata_props.add(key=METADATA_KEY, value=PRESETS["cifar10"].to_json())
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[np.ndarray, np.ndarray, Path]:
    """Random RGB images written as JPEGs; returns what Pillow decodes back, labels, the folder."""
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (N_IMG, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, N_IMG)
    root = tmp_path_factory.mktemp("imgs") / "imagenet"
    decoded = np.empty_like(raw)
    for i in range(N_IMG):
        folder = root / "val" / f"class{y[i]:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        f = folder / f"img{i:03d}.JPEG"
        Image.fromarray(raw[i]).save(f, quality=90)
        decoded[i] = np.asarray(Image.open(f).convert("RGB"))
    for c in range(10):  # every class folder exists, so class index == label
        (root / "val" / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
    return decoded, y, root


def _files_in_class_order(root: Path, decoded, y):
    """The image folder reader sorts by class then file name; give the other formats that order."""
    order = sorted(range(len(y)), key=lambda i: (y[i], i))
    return decoded[order], y[order]


def _cifar_folder(tmp: Path, x: np.ndarray, y: np.ndarray) -> Path:
    folder = tmp / "cifar-10-batches-py"
    folder.mkdir()
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    batch = {b"data": rows, b"labels": [int(v) for v in y], b"batch_label": b"test batch 1 of 1"}
    for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f, protocol=2)
    return folder


def _eval_json(model: Path, data: str, out: Path, *extra: str) -> dict:
    r = CliRunner().invoke(main, ["eval", str(model), "--data", data, "--T", "8", "--json", str(out), *extra])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())


def test_jpeg_folder_cifar_pickles_and_npz_give_the_same_accuracies(cifar_model, images, tmp_path):
    decoded, y, root = images
    x, y = _files_in_class_order(root, decoded, y)
    cifar = _cifar_folder(tmp_path, x, y)
    np.savez(tmp_path / "imgs.npz", x=x, y=y)
    results = [_eval_json(cifar_model, str(spec), tmp_path / f"{k}.json", "--compare-baseline", "--batch-size", "7")
               for k, spec in enumerate([root, cifar, tmp_path / "imgs.npz"])]
    rows = [[r["accuracy"] for r in res["rows"]] for res in results]
    assert rows[0] == rows[1] == rows[2]
    assert all(res["images"] == N_IMG for res in results)


def test_json_is_complete(cifar_model, images, tmp_path):
    decoded, y, root = images
    res = _eval_json(cifar_model, str(root), tmp_path / "r.json", "--compare-baseline", "--tau", "3")
    assert {"srp_onnx_version", "onnxruntime_version", "execution_provider", "settings", "T"} <= res.keys()
    assert res["execution_provider"] == "CPUExecutionProvider"
    names = [r["name"] for r in res["rows"]]
    assert names == ["ANN", "QCFS (tau=0)", "SRP (tau=3)"]
    for r in res["rows"][1:]:
        assert [a["t"] for a in r["accuracy"]] == list(range(1, 9))
        assert [a["total_steps"] for a in r["accuracy"]] == [r["tau"] + t for t in range(1, 9)]
        assert all({"top1", "top5"} <= a.keys() for a in r["accuracy"])
    assert res["settings"]["tau"] == 3 and res["settings"]["preprocessing"]["mean"] == list(PRESETS["cifar10"].mean)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_eval_is_deterministic(cifar_model, images, tmp_path):
    _, _, root = images
    a = _eval_json(cifar_model, str(root), tmp_path / "a.json")
    b = _eval_json(cifar_model, str(root), tmp_path / "b.json", "--batch-size", "5")
    assert a["rows"] == b["rows"]


def _refused(args, *needles):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    err = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert len(err) == 1 and "Traceback" not in r.output, r.output
    for n in needles:
        assert n in err[0], err[0]


def test_data_of_the_wrong_size_is_refused(cifar_model):
    _refused(["eval", str(cifar_model), "--data", "mnist", "--limit", "10"], "28x28", "32x32")


def test_labels_out_of_range_are_refused(cifar_model, tmp_path):
    x = np.zeros((4, 32, 32, 3), np.uint8)
    np.savez(tmp_path / "bad.npz", x=x, y=np.array([0, 1, 2, 99]))
    _refused(["eval", str(cifar_model), "--data", str(tmp_path / "bad.npz")], "99")


def test_missing_data_path_is_refused(cifar_model, tmp_path):
    _refused(["eval", str(cifar_model), "--data", str(tmp_path / "nowhere")], "nowhere")


def test_zero_time_steps_is_refused(cifar_model):
    _refused(["eval", str(cifar_model), "--data", "digits", "--T", "0"], "--T")


def test_plot_is_written(cifar_model, images, tmp_path):
    pytest.importorskip("matplotlib")
    _, _, root = images
    r = CliRunner().invoke(main, ["eval", str(cifar_model), "--data", str(root), "--T", "4", "--plot",
                                  str(tmp_path / "acc.png"), "--compare-baseline"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
