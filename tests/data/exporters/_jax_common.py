"""Flax NNX models + optax training for make_jax2onnx_*.py (CPU, deterministic seeds)."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


class MLP(nnx.Module):
    """flat [N, 64] -> Linear(64, 64) -> relu -> Linear(64, 10) logits."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(64, 64, rngs=rngs)
        self.fc2 = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        return self.fc2(nnx.relu(self.fc1(x)))


class CNN(nnx.Module):
    """NHWC [N, 8, 8, 1]: Conv(8)-relu, avg_pool 2, Conv(16)-relu, flatten, Linear(256, 64)-relu, Linear(64, 10)."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 8, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(8, 16, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.fc1 = nnx.Linear(16 * 4 * 4, 64, rngs=rngs)
        self.fc2 = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv1(x))
        x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = nnx.relu(self.conv2(x))
        x = x.reshape(x.shape[0], -1)
        x = nnx.relu(self.fc1(x))
        return self.fc2(x)


def train(model: nnx.Module, layout: str, epochs: int = 40, lr: float = 3e-3, batch: int = 64, seed: int = 0) -> float:
    _common.seed_everything(seed)
    x_tr, y_tr, x_te, y_te = _common.load_digits_split()
    x_tr, x_te = _common.to_layout(x_tr, layout), _common.to_layout(x_te, layout)
    steps = epochs * int(np.ceil(len(x_tr) / batch))
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, xb, yb):
        def loss_fn(m):
            logits = m(xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        perm = rng.permutation(len(x_tr))
        for i in range(0, len(x_tr), batch):
            idx = perm[i : i + batch]
            step(model, opt, jnp.asarray(x_tr[idx]), jnp.asarray(y_tr[idx]))
    pred = np.asarray(model(jnp.asarray(x_te))).argmax(1)
    return float((pred == y_te).mean())


def versions() -> dict[str, str]:
    import flax

    return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__}
