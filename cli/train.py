"""``srp-onnx train``: train a QCFS ANN in torch and export it to ONNX (thin: parse, call, print).

torch is imported inside the command, so ``srp-onnx --help`` works without it.
Library errors (``SrpOnnxError``) propagate to the ``srp-onnx`` group, which
prints them on one line and exits 2.
"""

from __future__ import annotations

from pathlib import Path

import click

from srp_onnx.errors import UsageError

_DATASETS = ("cifar10", "cifar100", "imagenet", "mnist", "digits", "custom32")
_ARCHS = ("cnn", "vgg16", "resnet8", "resnet18", "resnet20", "resnet34")
_TORCH_MISSING = "training needs torch: pip install 'srp-onnx[train]'"


@click.command("train")
@click.option("--dataset", required=True, type=click.Choice(_DATASETS),
              help="Dataset to train on. custom32: a 3x32x32 dataset of your own in --data-dir (CIFAR-format "
                   "folder or .npz of uint8 x [N, 32, 32, 3] and y), trained with the CIFAR-10 recipe; give its "
                   "--num-classes and --mean/--std.")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Dataset folder (CIFAR pickle folder, ImageNet root with train/ and val/, MNIST IDX "
                   "folder for the full MNIST); without it mnist is the built-in 5k, digits never takes one.")
@click.option("--num-classes", type=click.IntRange(min=2), default=None,
              help="custom32 only: the number of classes (labels 0..N-1).")
@click.option("--mean", default=None, metavar="R,G,B",
              help="custom32 only: per-channel mean of pixels / 255 [default: 0.5,0.5,0.5].")
@click.option("--std", default=None, metavar="R,G,B",
              help="custom32 only: per-channel std of pixels / 255 [default: 0.5,0.5,0.5].")
@click.option("--arch", type=click.Choice(_ARCHS), default="resnet20", show_default=True, help="Network.")
@click.option("--L", "L", type=click.IntRange(min=1), default=None,
              help="QCFS quantization levels [default: 4]. With --load: our checkpoints record L (leave it out); "
                   "the paper code's state_dicts do not, so give it, and it cannot be checked from the weights: "
                   "a wrong L shows only as a low ANN accuracy, measured when the test data is at hand "
                   "(--data-dir).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs [default: 300 CIFAR, 120 ImageNet, 30 mnist/digits].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="SGD learning rate, cosine-annealed [default: 0.02 CIFAR, 0.1 ImageNet and mnist/digits].")
@click.option("--wd", type=click.FloatRange(min=0), default=None,
              help="Weight decay [default: 5e-4; 1e-4 ImageNet].")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Global batch size (split across torchrun processes).")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of every random generator.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: model.onnx, best.pt, last.pt.")
@click.option("--resume", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Continue from a last.pt (model, optimizer, scheduler, epoch).")
@click.option("--load", "load", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Only export this trained checkpoint (ours or the paper code's state_dict) to OUT/model.onnx.")
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True)
@click.option("--exporter", type=click.Choice(("torchscript", "dynamo")), default="torchscript",
              show_default=True, help="torch.onnx.export backend.")
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="DataLoader worker processes.")
@click.option("--image-size", type=click.IntRange(min=8), default=None,
              help="ImageNet only: crop size (resize = size * 256/224) [default: 224].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (1 is fastest for small models on a busy machine) [default: torch's].")
@click.option("--quiet", is_flag=True, help="No progress bars or per-epoch lines on stderr.")
def train(dataset: str, data_dir: Path | None, num_classes: int | None, mean: str | None, std: str | None, arch: str,
          L: int | None, epochs: int | None, lr: float | None,
          wd: float | None, batch_size: int, seed: int, out: Path, resume: Path | None, load: Path | None,
          device: str, exporter: str, num_workers: int, image_size: int | None, threads: int | None,
          quiet: bool) -> None:
    """Train a QCFS ANN (the SRP paper's recipe) and export it to ONNX.

    Writes OUT/model.onnx (the best epoch by test accuracy, with dataset,
    arch, L, accuracy and preprocessing in its metadata), OUT/best.pt and
    OUT/last.pt. Under torchrun it trains data-parallel. With --load it only
    exports a checkpoint, measuring its test accuracy when the data is at hand.
    """
    if load is not None and resume is not None:
        raise click.BadParameter("give either --load (export only) or --resume (continue training), not both",
                                 param_hint="--load/--resume")
    if out.is_dir():  # outputs are never an input (a checkpoint named model.onnx, or --load OUT/best.pt)
        from srp_onnx.io import check_outputs

        outputs = {"--out (model.onnx)": out / "model.onnx"}
        if load is None:
            outputs["--out (best.pt)"] = out / "best.pt"
        check_outputs(outputs, {"--load": load, "--resume": resume})
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError:
        raise UsageError(_TORCH_MISSING) from None
    from srp_onnx.train import TrainConfig, export_checkpoint
    from srp_onnx.train import train as run_training

    custom = _custom(dataset, num_classes, mean, std)
    quiet = quiet or bool((click.get_current_context().find_root().obj or {}).get("quiet"))  # srp-onnx -q train

    if load is not None:
        done = export_checkpoint(load, dataset=dataset, arch=arch, out=out,
                                 data_dir=str(data_dir) if data_dir else None, L=L, image_size=image_size,
                                 device=device, exporter=exporter, num_workers=num_workers, threads=threads,
                                 progress=not quiet, custom=custom)
        click.echo(f"model: {done.onnx_path}")
        L_used = done.info["L"]
        if not done.info.get("L_recorded"):
            click.echo(f"L = {L_used} from --L: a paper-code checkpoint does not record L, so it cannot be checked "
                       "from the weights; the ANN accuracy is the check", err=True)
        if done.ann_accuracy is not None:
            click.echo(f"ann test accuracy: {done.ann_accuracy:.2f}% (with L = {L_used})")
        else:
            click.echo(f"ann test accuracy: not measured (no test data; give --data-dir to measure it with "
                       f"L = {L_used})")
        return
    config = TrainConfig(dataset=dataset, arch=arch, data_dir=str(data_dir) if data_dir else None,
                         L=4 if L is None else L, epochs=epochs, lr=lr, wd=wd, batch_size=batch_size,
                         seed=seed, out=str(out), resume=str(resume) if resume else None,
                         num_workers=num_workers, device=device, exporter=exporter, image_size=image_size,
                         threads=threads, progress=not quiet, custom=custom)
    try:
        result = run_training(config)
    except KeyboardInterrupt:
        last = out / "last.pt"
        raise KeyboardInterrupt(f"interrupted; continue with --resume {last}" if last.exists() else
                                "interrupted before the first epoch ended; nothing was saved") from None
    if result.onnx_path is not None:  # rank 0 only
        click.echo(f"model: {result.onnx_path}")
        click.echo(f"checkpoints: {result.best_path} {result.last_path}")
        click.echo(f"best ann test accuracy: {result.best_acc:.2f}% (last epoch {result.last_acc:.2f}%)")


def _custom(dataset: str, num_classes: int | None, mean: str | None, std: str | None):
    """The CustomData of --dataset custom32; --num-classes/--mean/--std with another dataset are refused."""
    from srp_onnx.train.datasets import CUSTOM, CustomData

    if dataset != CUSTOM:
        given = [f"--{n}" for n, v in (("num-classes", num_classes), ("mean", mean), ("std", std)) if v is not None]
        if given:
            raise click.BadParameter(f"{', '.join(given)} describe a custom32 dataset; {dataset} has its own.",
                                     param_hint="/".join(given))
        return None
    if num_classes is None:
        raise click.BadParameter("--dataset custom32 needs the number of classes.", param_hint="--num-classes")

    def floats(text: str | None, name: str) -> tuple[float, ...]:
        if text is None:
            return (0.5, 0.5, 0.5)
        try:
            return tuple(float(v) for v in text.split(","))
        except ValueError:
            raise click.BadParameter(f"'{text}': give three comma-separated numbers, e.g. 0.5,0.5,0.5.",
                                     param_hint=f"--{name}") from None

    return CustomData(num_classes, floats(mean, "mean"), floats(std, "std"))
