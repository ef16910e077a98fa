"""Options shared by several commands, defined once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

F = Callable[..., Any]


def convert_options(f: F) -> F:
    """Options of `convert`, also taken by `eval`/`inspect` when given an ANN."""
    for opt in reversed([
        click.option("--tau", default=None, metavar="N|auto",
                     help="Pre-simulation steps (SRP). Default 4 for convert; eval uses the model's. "
                          "'auto' chooses it on a calibration split (never the test split)."),
        click.option("--tau-data", default=None, metavar="DATA",
                     help="Data for --tau auto (its calibration split; default: eval's and analyze's --data, "
                          "convert's --calib)."),
        click.option("--tau-target", type=click.IntRange(min=1), default=None,
                     help="--tau auto maximises accuracy at this T (default: eval's --T, or 8)."),
        click.option("--latency-budget", type=click.IntRange(min=2), default=None,
                     help="--tau auto maximises accuracy at tau + T = this budget instead."),
        click.option("--tau-max", type=click.IntRange(min=0), default=16, show_default=True,
                     help="Largest tau --tau auto tries."),
        click.option("--calib", "calib", metavar="DATA", default=None,
                     help="Calibration data for ReLU thresholds: .npz, dataset folder, mnist or digits."),
        click.option("--calib-limit", type=click.IntRange(min=1), default=1000, show_default=True,
                     help="Calibration samples used."),
        click.option("--calib-rule", type=click.Choice(["percentile", "max"]), default="percentile",
                     show_default=True),
        click.option("--percentile", type=float, default=99.99, show_default=True,
                     help="Percentile of positive activations used as threshold."),
        click.option("--per-channel", is_flag=True, help="One calibrated threshold per channel."),
        click.option("--maxpool", type=click.Choice(["error", "gate", "avg"]), default="error", show_default=True,
                     help="MaxPool has no rate-equivalent: refuse it, gate it (spiking max pool), "
                          "or replace it by AvgPool."),
    ]):
        f = opt(f)
    return f


def preprocessing_options(f: F) -> F:
    """Overrides of the preprocessing read from the model's metadata."""
    for opt in reversed([
        click.option("--mean", default=None, help="Per-channel mean, e.g. 0.485,0.456,0.406."),
        click.option("--std", default=None, help="Per-channel std, e.g. 0.229,0.224,0.225."),
        click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Raw pixel divisor (255 for 8-bit images)."),
        click.option("--resize", type=click.IntRange(min=1), default=None,
                     help="Resize the shorter side first (ImageNet: 256)."),
        click.option("--crop", type=click.IntRange(min=1), default=None, help="Then center-crop (ImageNet: 224)."),
        click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default=None, help="Model input layout."),
    ]):
        f = opt(f)
    return f


def data_options(f: F) -> F:
    for opt in reversed([
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True),
        click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N images."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
    ]):
        f = opt(f)
    return f


def ray_options(f: F) -> F:
    """Distributed runs on Ray (evaluation, --tau auto, calibration)."""
    for opt in reversed([
        click.option("--ray", "ray_address", default=None, metavar="auto|ADDRESS",
                     help="Spread the work over Ray workers: 'auto' joins the running cluster (ray start --head) "
                          "or starts one here; or a cluster's address. Needs pip install 'srp-onnx[ray]'."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Ray workers (default: one per GPU Ray sees, else one per CPU)."),
    ]):
        f = opt(f)
    return f


CONVERSION_ONLY = ("calib", "calib_limit", "calib_rule", "percentile", "per_channel", "maxpool")
PREPROCESSING = ("mean", "std", "scale", "resize", "crop", "layout")


def warn_ignored(names: tuple[str, ...], why: str) -> None:
    """Say on stderr which of the options the user gave explicitly have no effect, and why."""
    ctx = click.get_current_context()
    given = [n for n in names if ctx.get_parameter_source(n) not in (None, click.core.ParameterSource.DEFAULT)]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        click.echo(f"srp-onnx: warning: {flags} ignored: {why}.", err=True)


def method_options(f: F) -> F:
    """The neuron rule at the end of the pre-simulation (docs/srp-algorithm.md 3a), for convert and eval."""
    for opt in reversed([
        click.option("--method", "method", metavar="RULE|auto", default=None,
                     help="Neuron rule at the end of the pre-simulation: srp (the paper) or another rule of "
                          "docs/srp-algorithm.md 3a (eval shows its row last); 'auto' chooses rule and tau on the "
                          "calibration split of --tau-data (eval's default: --data; convert's: --calib)."),
        click.option("--dead-zone", "dead_zone", type=click.FloatRange(min=0, max=1, max_open=True), default=None,
                     help="Level c of the deadzone/both rules, in units of theta (e.g. 1/(2L) = 0.125 for L = 4)."),
        click.option("--method-criterion", type=click.Choice(["safe", "margin", "target", "budget"]), default=None,
                     help="How --method auto chooses: safe (default: never more than 2 calibration images below "
                          "tau = 0 at any t, then best mean accuracy), margin (best worst-case margin over tau = 0), "
                          "target (best at t = --tau-target), budget (best at tau + t = --latency-budget)."),
    ]):
        f = opt(f)
    return f
