"""Hostile and careless inputs: no file runs code, hangs, exhausts memory or makes an internal error.

Per class of the reliability issue: code execution (1), hangs (4, under a timeout), memory (5, under an
RLIMIT_AS cap), exit 3 -> exit 2 (6), terminal injection (9), and the rest (11). Each refusal is exit 2
with one stderr line naming the file, no traceback, and every file that existed is left byte-identical.
"""

from __future__ import annotations

import gzip
import os
import pickle
import signal
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import mlp, save
from hostile import assert_unchanged, cli, one_error_line, refused, run_cli, snapshot
from onnx import TensorProto, external_data_helper, helper, numpy_helper
from PIL import Image

from srp_onnx.data.imagefolder import load_image
from srp_onnx.data.npz import read_npz
from srp_onnx.graph import from_onnx
from srp_onnx.passes import PassContext
from srp_onnx.passes.identity import eliminate_identity

CNN = Path(__file__).parent / "data" / "exporters" / "torch_ts_qcfs_cnn.onnx"  # 1 x 8 x 8 input
CAP_GIB = 3.0  # RLIMIT_AS for the memory cases: the CLI runs in about 2.5 GiB of address space


@pytest.fixture()
def work(tmp_path):
    save(mlp("Clip"), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((12, 16)).astype(np.float32), y=rng.integers(0, 4, 12))
    assert cli(["convert", tmp_path / "m.onnx", "-o", tmp_path / "m.snn.onnx"]).exit_code == 0
    return tmp_path


def _image_folder(root: Path, n: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / "imgs" / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / "imgs" / c / f"{i}.png")
    return root / "imgs"


# -- class 1: code execution -----------------------------------------------------------------------------------

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n"
       b"newpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n")


@pytest.mark.parametrize("content", [EPS, b"GIF89a" + bytes(64), b"BM" + bytes(64)], ids=["eps", "gif", "bmp"])
def test_a_file_of_another_format_named_png_is_refused_without_running_its_decoder(tmp_path, content, monkeypatch):
    from PIL import EpsImagePlugin

    called = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: called.append(a) or None)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    folder = _image_folder(tmp_path)
    (folder / "a" / "evil.png").write_bytes(content)
    before = snapshot(tmp_path)
    refused(["eval", CNN, "--data", folder], "evil.png", "not a JPEG or PNG")
    assert not called
    assert_unchanged(before, tmp_path)


def test_pickled_code_in_a_cifar_file_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    refused(["eval", CNN, "--data", folder], "test_batch", "refusing global")
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_a_checkpoint_with_code_is_refused_without_inviting_the_unsafe_load(tmp_path):
    torch = pytest.importorskip("torch")

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    line = refused(["train", "--dataset", "digits", "--arch", "cnn", "--load", tmp_path / "evil.pt",
                    "--out", tmp_path / "o"], "evil.pt", "never loaded")
    assert "weights_only=False" not in line and "succeed" not in line
    assert not (tmp_path / "pwned").exists()


# -- class 4: hangs --------------------------------------------------------------------------------------------

def test_a_symlink_loop_in_an_image_folder_is_refused_quickly(tmp_path):
    folder = _image_folder(tmp_path)
    (folder / "a" / "loop").symlink_to(folder / "a")
    before = snapshot(tmp_path)
    p = run_cli(["eval", CNN, "--data", folder], timeout=60)
    assert p.returncode == 2, p.stderr
    one_error_line(p.stderr, "symlink loop")
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize("tau", ["1000000000", "1e9", "-3", "4 ", "\u0664"])
def test_a_converted_model_whose_tau_is_absurd_is_refused_in_one_line(work, tau):
    m = onnx.load(str(work / "m.snn.onnx"))
    for p in m.metadata_props:
        if p.key == "srp_onnx.tau":
            p.value = tau
    onnx.save(m, str(work / "t.snn.onnx"))
    before = snapshot(work)
    for args in (["eval", work / "t.snn.onnx", "--data", work / "d.npz"], ["inspect", work / "t.snn.onnx"],
                 ["analyze", work / "t.snn.onnx", "--data", work / "d.npz"]):
        refused(args, "t.snn.onnx", "srp_onnx.tau")
    assert_unchanged(before, work)


@pytest.mark.parametrize("args", [["--tau", str(10**20)], ["--tau", "1001"], ["--T", str(10**9)],
                                  ["--tau", "auto", "--tau-max", "100000", "--tau-data", "{w}/d2.npz"]])
def test_huge_tau_and_T_are_refused_before_any_simulation(work, args):
    (work / "d2.npz").write_bytes((work / "d.npz").read_bytes())
    line = refused(["eval", work / "m.onnx", "--data", work / "d.npz", *(a.format(w=work) for a in args)],
                   "1000" if "--tau" in args else "4096")
    assert "eval [" not in line


def test_removing_identity_nodes_is_linear():
    """100k chained Identity nodes: the old pass (a list removal and a full rename per node) ran for minutes."""
    n = 100_000
    nodes = [helper.make_node("Identity", [f"t{i}" if i else "x"], [f"t{i + 1}"]) for i in range(n)]
    nodes.append(helper.make_node("Relu", [f"t{n}"], ["y"]))
    g = helper.make_graph(nodes, "ids", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    graph = from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("quadratic")))
    signal.alarm(30)
    try:
        assert eliminate_identity(graph, PassContext())
    finally:
        signal.alarm(0)
    assert [(x.op, x.inputs) for x in graph.nodes] == [("Relu", ["x"])]


# -- class 5: memory, under an address-space cap ---------------------------------------------------------------

def _range_model(path: Path, op: str) -> Path:
    if op == "Range":
        inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in (("s", 0), ("l", 10**12), ("d", 1))]
        nodes = [helper.make_node("Range", ["s", "l", "d"], ["r"], name="r"),
                 helper.make_node("Cast", ["r"], ["rf"], to=1)]
    else:
        inits = [numpy_helper.from_array(np.array([10**5, 10**5], np.int64), "sh")]
        nodes = [helper.make_node("ConstantOfShape", ["sh"], ["rf"], name="c")]
    nodes += [helper.make_node("ReduceSum", ["rf"], ["rs"], keepdims=0), helper.make_node("Add", ["x", "rs"], ["h"]),
              helper.make_node("Relu", ["h"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return save(m, path)


def _sparse_external(tmp_path: Path) -> Path:
    m = mlp("Clip")
    n = (3 << 30) // 4  # a 3 GiB weight, declared consistently, in a sparse file
    w = onnx.TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[n])
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "big.bin"), ("offset", "0"), ("length", str(n * 4))):
        w.external_data.add(key=k, value=v)
    m.graph.initializer.append(w)
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(n * 4)
    onnx.save(m, str(tmp_path / "sparse.onnx"))
    return tmp_path / "sparse.onnx"


def _cifar_bomb(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Bomb:
        def __reduce__(self):
            return (np.ndarray, ((1_000_000, 3072),))

    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Bomb(), b"labels": [0]}, protocol=2))
    return folder


def _tall_png(tmp_path: Path) -> Path:
    folder = _image_folder(tmp_path)
    Image.new("L", (1, 1_000_000)).save(folder / "a" / "tall.png", optimize=True)
    return folder


@pytest.mark.parametrize("case", ["range", "constant_of_shape", "sparse_external", "cifar_bomb", "tall_png",
                                  "resize_metadata"])
def test_tiny_files_that_ask_for_gigabytes_are_refused_under_a_memory_cap(tmp_path, case):
    if case in ("range", "constant_of_shape"):
        args, needle = ["convert", _range_model(tmp_path / "r.onnx", "Range" if case == "range" else "C"),
                        "-o", tmp_path / "o.onnx"], "elements"
    elif case == "sparse_external":
        args, needle = ["convert", _sparse_external(tmp_path), "-o", tmp_path / "o.onnx"], "sparse.onnx"
    elif case == "cifar_bomb":
        args, needle = ["eval", CNN, "--data", _cifar_bomb(tmp_path)], "more than a CIFAR file holds"
    elif case == "tall_png":
        args, needle = ["eval", CNN, "--data", _tall_png(tmp_path), "--resize", "28", "--crop", "8"], "pixels"
    else:
        save(mlp("Clip"), tmp_path / "m.onnx")
        m = onnx.load(str(tmp_path / "m.onnx"))
        m.metadata_props.add(key="srp_onnx.preprocessing", value='{"resize": 100000, "channels": 1}')
        onnx.save(m, str(tmp_path / "m.onnx"))
        np.savez(tmp_path / "u.npz", x=np.zeros((4, 4, 4), np.uint8), y=np.zeros(4, np.int64))
        args, needle = ["eval", tmp_path / "m.onnx", "--data", tmp_path / "u.npz"], "pixels"
    before = snapshot(tmp_path)
    p = run_cli(args, timeout=120, memory_gib=CAP_GIB)
    assert p.returncode == 2, p.stderr
    one_error_line(p.stderr, needle)
    assert_unchanged(before, tmp_path)


def test_limit_reads_only_the_first_samples_of_an_npz(tmp_path):
    x = np.zeros((20_000, 3072), np.uint8)  # 61 MB of images, compressed to a few hundred KB
    x[:, 0] = np.arange(20_000) % 251
    np.savez_compressed(tmp_path / "big.npz", x=x.reshape(-1, 32, 32, 3), y=np.arange(20_000) % 10)
    del x
    tracemalloc.start()
    try:
        images, labels, classes = read_npz(tmp_path / "big.npz", limit=10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert images.shape == (10, 32, 32, 3) and list(labels) == list(range(10)) and classes == 10
    assert list(images[:, 0, 0, 0]) == list(range(10))
    assert peak < 8 << 20, peak  # not the 61 MB of the whole array


# -- class 6: exit 3 -> exit 2 ---------------------------------------------------------------------------------

def _external(tmp_path: Path, **fields: str) -> Path:
    model = mlp("Clip")
    external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.bin",
                                                         size_threshold=0)
    onnx.save(model, str(tmp_path / "e.onnx"))
    m = onnx.load(str(tmp_path / "e.onnx"), load_external_data=False)
    for e in m.graph.initializer[0].external_data:
        if e.key in fields:
            e.value = fields[e.key]
    onnx.save(m, str(tmp_path / "e.onnx"))
    return tmp_path / "e.onnx"


@pytest.mark.parametrize("fields", [{"offset": "-8"}, {"offset": "x"}, {"length": "-1"}, {"length": "1e3"},
                                    {"location": "loop.bin"}], ids=str)
def test_malformed_external_data_is_exit_2(tmp_path, fields):
    path = _external(tmp_path, **fields)
    (tmp_path / "loop.bin").symlink_to(tmp_path / "loop.bin")
    before = snapshot(tmp_path)
    refused(["convert", path, "-o", tmp_path / "o.onnx"], "e.onnx")
    assert_unchanged(before, tmp_path)


def _idx(path: Path, dims: tuple[int, ...], payload: bytes = b"") -> None:
    path.write_bytes(b"\0\0\x08" + bytes([len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload)


@pytest.mark.parametrize("dims", [(2**32 - 1, 2**32 - 1, 2**32 - 1), (2**31, 2**31, 4), (1, 28, 28)])
def test_idx_headers_that_overflow_or_lie_are_exit_2(tmp_path, dims):
    folder = tmp_path / "idx"
    folder.mkdir()
    _idx(folder / "t10k-images-idx3-ubyte", dims, bytes(10))
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\0\0\x08\x01" + struct.pack(">I", 1) + b"\x01")
    refused(["eval", CNN, "--data", folder], "t10k-images-idx3-ubyte")


@pytest.mark.parametrize("case", ["x0d", "y0d", "y_huge", "object", "x_lies"])
def test_npz_arrays_that_are_not_per_sample_are_exit_2(tmp_path, case):
    x, y = np.zeros((4, 16), np.float32), np.zeros(4, np.int64)
    if case == "x0d":
        x = np.float32(1)
    elif case == "y0d":
        y = np.int64(1)
    elif case == "y_huge":
        y = np.full(4, 2**64 - 1, np.uint64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    if case == "object":
        np.savez(tmp_path / "d.npz", x=np.array([object()] * 4), y=y, allow_pickle=True)
    if case == "x_lies":  # the header says a billion rows
        import zipfile

        with zipfile.ZipFile(tmp_path / "d.npz", "w") as z:
            header = b"\x93NUMPY\x01\x00" + struct.pack("<H", 118)
            body = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 16), }"
            z.writestr("x.npy", header + body.ljust(118 - 1) + b"\n" + bytes(64))
            z.writestr("y.npy", (tmp_path / "y.npy").write_bytes(b"") or _npy(y))
    save(mlp("Clip"), tmp_path / "m.onnx")
    line = refused(["eval", tmp_path / "m.onnx", "--data", tmp_path / "d.npz"], "d.npz")
    if case == "y_huge":
        assert "18446744073709551615" in line


def _npy(a: np.ndarray) -> bytes:
    import io

    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


@pytest.mark.parametrize("kind", ["dev_zero", "fifo_npz", "fifo_png"])
def test_special_files_as_data_are_refused_without_blocking(tmp_path, kind):
    save(mlp("Clip"), tmp_path / "m.onnx")
    if kind == "dev_zero":
        data = "/dev/zero"
    elif kind == "fifo_npz":
        data = tmp_path / "d.npz"
        os.mkfifo(data)
    else:
        data = _image_folder(tmp_path)
        os.mkfifo(data / "a" / "z.png")
    p = run_cli(["eval", CNN if kind == "fifo_png" else tmp_path / "m.onnx", "--data", data], timeout=60)
    assert p.returncode == 2, p.stderr
    one_error_line(p.stderr, "regular file")


@pytest.mark.parametrize("layers", ["[]", "{", "[" * 100_000 + "]" * 100_000, '[{"name": 1}]', "[1]",
                                    '[{"name": "a", "input": "h", "output": "a", "kind": "clip", "theta": "6", '
                                    '"nodes": []}]',
                                    '[{"name": "a", "input": "h", "output": "a", "kind": "qcfs", "theta": 1.0, '
                                    '"nodes": [], "levels": 1e300}]'])
def test_malformed_layer_metadata_is_exit_2(work, layers):
    m = onnx.load(str(work / "m.snn.onnx"))
    for p in m.metadata_props:
        if p.key == "srp_onnx.layers":
            p.value = layers
    onnx.save(m, str(work / "bad.snn.onnx"))
    for args in (["eval", work / "bad.snn.onnx", "--data", work / "d.npz"], ["inspect", work / "bad.snn.onnx"]):
        refused(args, "bad.snn.onnx", "srp_onnx.layers")


@pytest.mark.parametrize("damage", ["scheduler", "optimizer", "epoch", "L", "best_acc"])
def test_crafted_training_checkpoints_are_exit_2_naming_the_file(tmp_path, damage):
    torch = pytest.importorskip("torch")
    from srp_onnx.train.export import CHECKPOINT_FORMAT
    from srp_onnx.train.models import build_model

    model = build_model("cnn", 10, 4, in_channels=1, image_size=8)
    obj = {"format": CHECKPOINT_FORMAT, "arch": "cnn", "dataset": "digits", "L": 4, "epoch": 0, "best_acc": 0.0,
           "model": model.state_dict(), "optimizer": {"state": {}, "param_groups": []},
           "scheduler": {"T_max": 1}, "image_size": 8}
    obj[damage] = {"scheduler": "nonsense", "optimizer": {"state": 3}, "epoch": 10**12, "L": "four",
                   "best_acc": float("nan")}[damage]
    torch.save(obj, tmp_path / "last.pt")
    flag = "--load" if damage == "L" else "--resume"
    refused(["train", "--dataset", "digits", "--arch", "cnn", "--epochs", "1", flag, tmp_path / "last.pt",
             "--out", tmp_path / "o", "--quiet"], "last.pt")


# -- class 9: terminal injection -------------------------------------------------------------------------------

def test_node_names_and_metadata_cannot_forge_lines_or_drive_the_terminal(tmp_path):
    m = mlp("Clip", extra="Sin")
    for n in m.graph.node:
        if n.name == "act1":
            n.name = "act\nconvertible: yes\x1b[2J\u202e"
        if n.name == "extra1":
            n.name = "bad\nconvertible: yes\x1b]0;owned\x07"
    path = save(m, tmp_path / "m.onnx")
    r = cli(["inspect", path])
    assert r.exit_code == 2
    for text in (r.output, r.stderr):
        assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert [ln for ln in r.output.splitlines() if ln.startswith("convertible")] == ["convertible: no (1 problem(s))"]
    line = one_error_line(r.stderr)
    assert "\\nconvertible: yes\\x1b]0;owned\\x07" in line
    m2 = mlp("Clip")
    m2.graph.node[1].name = "act\nconvertible: yes\x1b[2J\u202e"
    save(m2, tmp_path / "ok.onnx")
    r = cli(["convert", tmp_path / "ok.onnx", "-o", tmp_path / "ok.snn.onnx"])
    assert r.exit_code == 0, r.output
    r = cli(["inspect", tmp_path / "ok.snn.onnx"])
    assert "\x1b" not in r.output and "convertible: yes" not in r.output.replace("\\nconvertible: yes", "")


# -- class 11: the rest ----------------------------------------------------------------------------------------

def test_sixteen_bit_pngs_are_scaled_not_clipped(tmp_path):
    a = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1024).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    img = load_image(tmp_path / "g16.png")
    expect = np.rint(a / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(img[..., 0], expect)
    assert img[..., 0].min() == 0 and 0 < np.median(img) < 255


def test_stderr_is_one_line_where_home_is_unwritable(work):
    env_home = "/proc/nonexistent-home"
    p = subprocess.run([sys.executable, "-m", "srp_onnx_cli.main", "eval", str(work / "m.snn.onnx"), "--data",
                        str(work / "nope.npz")], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, HOME=env_home, XDG_CACHE_HOME=env_home))
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_train_without_dataset_is_one_line(tmp_path):
    r = cli(["train", "--out", tmp_path / "o"])
    assert r.exit_code == 2
    one_error_line(r.stderr, "--dataset", "cifar10, cifar100")


def test_a_network_inside_nested_ifs_is_named_as_control_flow(tmp_path):
    def branch(name: str, inner: onnx.NodeProto) -> onnx.GraphProto:
        return helper.make_graph([inner], name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT,
                                                                                   None)])

    relu = helper.make_node("Relu", ["x"], ["deep_y"])
    inner_if = helper.make_node("If", ["c"], ["then_y"], then_branch=branch("deep", relu),
                                else_branch=branch("deep", helper.make_node("Relu", ["x"], ["deep_y"])))
    outer = helper.make_node("If", ["c"], ["y"], name="outer", then_branch=branch("then", inner_if),
                             else_branch=branch("then", helper.make_node("If", ["c"], ["then_y"],
                                                                         then_branch=branch("deep", relu),
                                                                         else_branch=branch("deep", relu))))
    g = helper.make_graph([outer], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                          [numpy_helper.from_array(np.array(True), "c")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    refused(["convert", save(m, tmp_path / "if.onnx"), "-o", tmp_path / "o.onnx"], "'outer'", "control flow")
