"""Train a QCFS network (the paper's recipe) and export it to ONNX.

One call, :func:`train`, does it all: data, model, SGD (momentum 0.9) with
cosine annealing over the epochs, the best checkpoint by test accuracy, and
the ONNX export of that best checkpoint. Launched by ``torchrun`` (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` set) it trains data-parallel (NCCL on CUDA,
Gloo on CPU); only rank 0 writes files and prints.

Determinism: at the start of every epoch the global torch RNG and the
DataLoader's generator are reseeded from ``(seed, epoch)``; DataLoader
workers derive their seeds from that generator, and numpy / ``random`` are
seeded per worker. So a run repeats under the same seed, and a resumed run
continues exactly as the uninterrupted one would have (on CPU; on CUDA up
to the nondeterminism that ``use_deterministic_algorithms(warn_only=True)``
leaves).

Per-dataset defaults (used for options the caller leaves as ``None``):
CIFAR: 300 epochs, lr 0.02, weight decay 5e-4 (SRP/QCFS CIFAR recipe);
ImageNet: 120 epochs, lr 0.1, weight decay 1e-4 (QCFS ImageNet code);
MNIST / digits: 30 epochs, lr 0.1, weight decay 5e-4 (the ``cnn`` reaches
98% on the MNIST-5k held-out split in about five minutes on two CPU cores).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset
from tqdm import tqdm

from srp_onnx.errors import DataError, UsageError, safe
from srp_onnx.train.datasets import DATASETS, CustomData, DataBundle, load_data
from srp_onnx.train.export import (
    CHECKPOINT_FORMAT,
    EXPORTERS,
    export_onnx,
    extract_state_dict,
    read_checkpoint,
    save_checkpoint,
    training_metadata,
)
from srp_onnx.train.models import ARCHS, build_model

#: (epochs, lr, weight decay) when the caller gives none.
DEFAULTS: dict[str, tuple[int, float, float]] = {
    "cifar10": (300, 0.02, 5e-4),
    "cifar100": (300, 0.02, 5e-4),
    "imagenet": (120, 0.1, 1e-4),
    "mnist": (30, 0.1, 5e-4),
    "digits": (30, 0.1, 5e-4),
    "custom32": (300, 0.02, 5e-4),  # the CIFAR recipe
}


@dataclass
class EpochStats:
    """One epoch: mean training loss, training and test top-1 (percent)."""

    epoch: int
    loss: float
    train_acc: float
    test_acc: float


@dataclass
class TrainConfig:
    """Options of :func:`train`; ``None`` means the per-dataset default."""

    dataset: str
    arch: str = "resnet20"
    data_dir: str | None = None
    L: int = 4
    epochs: int | None = None
    lr: float | None = None
    wd: float | None = None
    batch_size: int = 128
    seed: int = 42
    out: str = "runs/train"
    resume: str | None = None
    num_workers: int = 0
    device: str = "auto"
    exporter: str = "torchscript"
    image_size: int | None = None  # ImageNet crop (resize = crop * 256/224)
    dropout: float = 0.0
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    progress: bool = True
    export: bool = True
    custom: CustomData | None = None  # the class count and normalisation of a custom32 dataset
    #: Called on rank 0 after each epoch's checkpoints are written (logging, early stop by raising).
    on_epoch: Callable[[EpochStats], None] | None = field(default=None, repr=False, compare=False)


@dataclass
class TrainResult:
    """What :func:`train` produced (paths are ``None`` on ranks other than 0)."""

    best_acc: float
    last_acc: float
    epochs: int
    best_path: Path | None
    last_path: Path | None
    onnx_path: Path | None
    history: list[EpochStats] = field(default_factory=list)


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Validate ``config`` and fill per-dataset defaults."""
    if config.dataset not in DATASETS:
        raise UsageError(f"Unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)}.")
    if config.arch not in ARCHS:
        raise UsageError(f"Unknown architecture {config.arch!r}; choose one of {', '.join(ARCHS)}.")
    if config.exporter not in EXPORTERS:
        raise UsageError(f"Unknown exporter {config.exporter!r}; choose one of {', '.join(EXPORTERS)}.")
    if config.L < 1:
        raise UsageError(f"--L must be at least 1, got {config.L}.")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {config.batch_size}.")
    epochs, lr, wd = DEFAULTS[config.dataset]
    config = dataclasses.replace(
        config,
        epochs=epochs if config.epochs is None else config.epochs,
        lr=lr if config.lr is None else config.lr,
        wd=wd if config.wd is None else config.wd,
    )
    assert config.epochs is not None
    if config.epochs < 1:
        raise UsageError(f"--epochs must be positive, got {config.epochs}.")
    return config


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when available, else ``cpu``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda was given but torch sees no CUDA device; use --device cpu.")
        return torch.device("cuda", local_rank)
    if device == "cpu":
        return torch.device("cpu")
    raise UsageError(f"Unknown device {device!r}; choose auto, cpu or cuda.")


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy and ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**63


def _worker_init(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from its torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_deterministic() -> None:
    """Ask torch for deterministic kernels (warn where there are none)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def _init_distributed(device: str) -> tuple[_Dist, torch.device]:
    """Join the torchrun process group when the env says so."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" not in os.environ or world <= 1:
        return _Dist(), resolve_device(device)
    info = _Dist(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    dev = resolve_device(device, info.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return info, dev


def _optimizer(model: nn.Module, lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)


def evaluate(model: nn.Module, dataset: Dataset[tuple[torch.Tensor, int]], device: torch.device, *,
             batch_size: int = 256, num_workers: int = 0, dist_info: _Dist | None = None,
             progress: bool = False) -> float:
    """Top-1 accuracy (percent) of ``model`` on ``dataset``.

    Under DDP every rank scores a disjoint stride of the test set and the
    counts are summed, so the result is exact (no padding duplicates).
    """
    info = dist_info or _Dist()
    subset = Subset(dataset, range(info.rank, len(dataset), info.world)) if info.enabled else dataset
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    correct = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for images, labels in tqdm(loader, desc="test", leave=False, file=sys.stderr,
                                   disable=not (progress and info.main)):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            logits = model(images)
            correct[0] += (logits.argmax(1) == labels).sum()
            correct[1] += labels.numel()
    if info.enabled:
        dist.all_reduce(correct)
    model.train(was_training)
    return float(100.0 * correct[0] / max(1.0, float(correct[1])))


def _checkpoint_state(config: TrainConfig, bundle: DataBundle, model: nn.Module,
                      optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int, best_acc: float,
                      acc: float) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "arch": config.arch,
        "dataset": config.dataset,
        "L": config.L,
        "num_classes": bundle.num_classes,
        "in_channels": bundle.in_channels,
        "image_size": bundle.image_size,
        "epoch": epoch,  # epochs completed
        "acc": acc,
        "best_acc": best_acc,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        # Plain values only, so the file loads with torch.load(weights_only=True).
        "config": {f.name: (dataclasses.asdict(getattr(config, f.name)) if f.name == "custom" and config.custom
                            else getattr(config, f.name))
                   for f in dataclasses.fields(config) if f.name != "on_epoch"},
    }


def _restore(path: str, config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: Any) -> tuple[int, float]:
    """Load model/optimizer/scheduler from ``path``; returns (epochs done, best accuracy)."""
    obj = read_checkpoint(path)
    if obj.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"--resume {path!r} is not a srp-onnx training checkpoint (last.pt); "
                         "use --load to export a paper-code state_dict.")
    for key in ("arch", "dataset", "L"):
        if obj.get(key) != getattr(config, key):
            raise UsageError(f"--resume {path!r} was trained with {key}={obj.get(key)!r}, "
                             f"not {getattr(config, key)!r}; pass the same --{key}.")
    where = f"--resume {path!r}"
    sched, optim = obj.get("scheduler"), obj.get("optimizer")
    if not isinstance(sched, dict) or not isinstance(optim, dict):
        raise DataError(f"{where}: its scheduler or optimizer state is missing or malformed; resume from an "
                        "intact last.pt or start again.")
    planned = sched.get("T_max")
    if planned is not None and planned != config.epochs:
        # The cosine schedule's length is part of the run; changing it mid-way would jump the lr.
        raise UsageError(f"--resume {path!r} belongs to a {planned}-epoch run, not {config.epochs}; "
                         f"pass --epochs {planned}.")
    epoch, best = obj.get("epoch"), obj.get("best_acc", 0.0)
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and 0 <= epoch <= config.epochs) \
            or not isinstance(best, (int, float)) or not math.isfinite(best):
        raise DataError(f"{where}: its epoch {safe(epoch)!s:.20} or best accuracy {safe(best)!s:.20} is not "
                        f"valid for a {config.epochs}-epoch run; resume from an intact last.pt.")
    try:
        model.load_state_dict(extract_state_dict(obj))
        optimizer.load_state_dict(optim)
        scheduler.load_state_dict(sched)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise DataError(f"{where}: its model, optimizer or scheduler state does not fit this run "
                        f"({safe(str(e).splitlines()[0] if str(e) else type(e).__name__)[:120]}); resume from "
                        "an intact last.pt or start again.") from None
    return epoch, float(best)


def train(config: TrainConfig) -> TrainResult:
    """Train ``config.arch`` with QCFS on ``config.dataset``; write ``best.pt``, ``last.pt``, ``model.onnx``.

    Files go to ``config.out``. The ONNX file is exported from the best
    checkpoint (by test accuracy) and carries it as ``srp_onnx.ann_accuracy``.
    """
    config = resolve_config(config)
    assert config.epochs is not None and config.lr is not None and config.wd is not None
    info, device = _init_distributed(config.device)
    try:
        return _train(config, info, device)
    finally:
        if info.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, info: _Dist, device: torch.device) -> TrainResult:
    assert config.epochs is not None and config.lr is not None and config.wd is not None
    make_deterministic()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    bundle = load_data(config.dataset, config.data_dir, image_size=config.image_size, custom=config.custom)
    assert bundle.train is not None and bundle.test is not None
    out = Path(config.out)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)

    seed_everything(config.seed)  # the model's init depends on the seed only
    model = build_model(config.arch, bundle.num_classes, config.L, in_channels=bundle.in_channels,
                        image_size=bundle.image_size, dropout=config.dropout).to(device)
    optimizer = _optimizer(model, config.lr, config.wd)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    start_epoch, best_acc = 0, -math.inf
    if config.resume:
        start_epoch, best_acc = _restore(config.resume, config, model, optimizer, scheduler)
    net: nn.Module = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    generator = torch.Generator()
    sampler: DistributedSampler[Any] | RandomSampler
    if info.enabled:
        sampler = DistributedSampler(bundle.train, num_replicas=info.world, rank=info.rank, shuffle=True,
                                     seed=config.seed)
    else:
        sampler = RandomSampler(bundle.train, generator=generator)
    per_rank_batch = max(1, config.batch_size // info.world)
    loader = DataLoader(bundle.train, batch_size=per_rank_batch, sampler=sampler, num_workers=config.num_workers,
                        worker_init_fn=_worker_init, generator=generator, pin_memory=device.type == "cuda",
                        drop_last=False)
    loss_fn = nn.CrossEntropyLoss()
    history: list[EpochStats] = []
    last_acc = float("nan")
    best_path, last_path = out / "best.pt", out / "last.pt"

    for epoch in range(start_epoch, config.epochs):
        seed = _epoch_seed(config.seed, epoch)
        torch.manual_seed(seed + info.rank)
        generator.manual_seed(seed + info.rank)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        net.train()
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, file=sys.stderr,
                   disable=not (config.progress and info.main))
        for images, labels in bar:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            logits = net(images)
            loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * labels.numel()
            correct += int((logits.detach().argmax(1) == labels).sum())
            seen += labels.numel()
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{100.0 * correct / seen:.2f}")
        scheduler.step()
        last_acc = evaluate(model, bundle.test, device, batch_size=max(config.batch_size, 256),
                            num_workers=config.num_workers, dist_info=info, progress=config.progress)
        stats = EpochStats(epoch + 1, total_loss / max(1, seen), 100.0 * correct / max(1, seen), last_acc)
        history.append(stats)
        improved = last_acc > best_acc
        best_acc = max(best_acc, last_acc)
        if info.main:
            state = _checkpoint_state(config, bundle, model, optimizer, scheduler, epoch + 1, best_acc, last_acc)
            if improved:
                save_checkpoint(best_path, state)
            save_checkpoint(last_path, state)
            if config.progress:
                tqdm.write(f"epoch {stats.epoch}/{config.epochs}: loss {stats.loss:.4f}  train {stats.train_acc:.2f}%"
                           f"  test {stats.test_acc:.2f}%  best {best_acc:.2f}%", file=sys.stderr)
            if config.on_epoch is not None:
                config.on_epoch(stats)

    onnx_path: Path | None = None
    if info.main and config.export:
        if best_path.is_file():
            model.load_state_dict(extract_state_dict(read_checkpoint(best_path)))
        meta = training_metadata(config.dataset, config.arch, config.L, best_acc if best_acc > -math.inf else None,
                                 bundle.preprocessing)
        onnx_path = export_onnx(model, out / "model.onnx",
                                input_shape=(1, bundle.in_channels, bundle.image_size, bundle.image_size),
                                metadata=meta, exporter=config.exporter)
    return TrainResult(best_acc=best_acc, last_acc=last_acc, epochs=config.epochs,
                       best_path=best_path if info.main else None, last_path=last_path if info.main else None,
                       onnx_path=onnx_path, history=history)


@dataclass
class ExportResult:
    """What :func:`export_checkpoint` produced."""

    onnx_path: Path
    ann_accuracy: float | None
    info: dict[str, Any]


def export_checkpoint(checkpoint: str | Path, *, dataset: str, arch: str, out: str | Path,
                      data_dir: str | None = None, L: int | None = None, image_size: int | None = None,
                      device: str = "auto", exporter: str = "torchscript", batch_size: int = 256,
                      num_workers: int = 0, threads: int | None = None, evaluate_accuracy: bool = True,
                      progress: bool = True, custom: CustomData | None = None) -> ExportResult:
    """Export a trained checkpoint (ours or the paper code's) to ``out/model.onnx``.

    When the dataset's test split can be opened (built-in datasets, or
    ``data_dir`` given) the ANN test accuracy is measured and written into the
    metadata; otherwise ``srp_onnx.ann_accuracy`` is left out.
    """
    from srp_onnx.train.export import load_checkpoint

    if dataset not in DATASETS:
        raise UsageError(f"Unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    if threads is not None:
        torch.set_num_threads(threads)
    have_data = evaluate_accuracy and (data_dir is not None or dataset in ("mnist", "digits"))
    if have_data:
        bundle = load_data(dataset, data_dir, image_size=image_size, splits=("test",), custom=custom)
        pre, channels, size, classes = bundle.preprocessing, bundle.in_channels, bundle.image_size, bundle.num_classes
    else:
        from srp_onnx.train.datasets import _preprocessing, _size

        pre = _preprocessing(dataset, image_size, custom)
        size = _size(pre)[0]
        channels, classes = int(getattr(pre, "channels", 3)), None if custom is None else custom.num_classes
    model, info = load_checkpoint(checkpoint, arch, classes, L, in_channels=channels, image_size=size)
    if info["image_size"] != size and arch in ("vgg16", "cnn"):
        raise UsageError(f"Checkpoint {str(checkpoint)!r} expects {info['image_size']}px inputs, "
                         f"the {dataset} preprocessing gives {size}px; pass a matching --image-size.")
    accuracy: float | None = None
    if have_data:
        assert bundle.test is not None
        dev = resolve_device(device)
        accuracy = evaluate(model.to(dev), bundle.test, dev, batch_size=batch_size, num_workers=num_workers,
                            progress=progress)
    meta = training_metadata(dataset, arch, int(info["L"]), accuracy, pre)
    path = export_onnx(model, Path(out) / "model.onnx", input_shape=(1, channels, size, size), metadata=meta,
                       exporter=exporter)
    return ExportResult(onnx_path=path, ann_accuracy=accuracy, info=info)
