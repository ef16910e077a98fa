"""Keras (TensorFlow backend) helpers for make_keras*.py: deterministic training on digits, NHWC [N, 8, 8, 1]."""

from __future__ import annotations

import os
import sys

# tf2onnx's graph optimizations depend on Python's set/dict-of-str iteration order: with different hash
# seeds the Flatten shape is either folded to a constant [-1, 256] or kept as Shape/Gather/Slice/Concat.
# Re-exec once with a fixed PYTHONHASHSEED so the graph structure is reproducible (tf2onnx's generated
# names, e.g. the batch dim_param 'unk__NN' and 'const_fold_opt__NN', may still vary between runs).
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable, *sys.argv])

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import _common
import keras
import numpy as np
import tensorflow as tf


def setup(seed: int = 0) -> None:
    _common.seed_everything(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)


def cnn(bn: bool = False, pool: str = "avg", name: str = "digits_cnn") -> keras.Model:
    """Conv2D(8)-[BN]-relu, pool 2, Conv2D(16)-[BN]-relu, Flatten, Dense(64, relu), Dense(10, softmax)."""
    L = keras.layers
    Pool = L.AveragePooling2D if pool == "avg" else L.MaxPooling2D
    layers: list = [keras.Input(shape=(8, 8, 1), name="input")]
    if bn:
        layers += [L.Conv2D(8, 3, padding="same"), L.BatchNormalization(), L.ReLU()]
    else:
        layers += [L.Conv2D(8, 3, padding="same", activation="relu")]
    layers += [Pool(2)]
    if bn:
        layers += [L.Conv2D(16, 3, padding="same"), L.BatchNormalization(), L.ReLU()]
    else:
        layers += [L.Conv2D(16, 3, padding="same", activation="relu")]
    layers += [L.Flatten(), L.Dense(64, activation="relu"), L.Dense(10, activation="softmax", name="probs")]
    return keras.Sequential(layers, name=name)


def train(model: keras.Model, epochs: int = 40) -> float:
    x_tr, y_tr, x_te, y_te = _common.load_digits_split()
    x_tr, x_te = _common.to_layout(x_tr, "NHWC"), _common.to_layout(x_te, "NHWC")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_tr, y_tr, batch_size=64, epochs=epochs, shuffle=True, verbose=0)
    pred = model.predict(x_te, verbose=0).argmax(1)
    return float((pred == y_te).mean())


def versions() -> dict[str, str]:
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__}
