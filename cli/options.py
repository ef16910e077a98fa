"""Options shared by several commands, defined once; their help sections; what warns when given alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

F = Callable[..., Any]

# --help sections, by parameter name. Click's own help formatter with a table (rather than, say, cloup's
# option_group): the same shared option decorators serve convert, eval and analyze, and each option keeps
# one section in all of them without splitting those decorators by section.
HELP_SECTIONS: dict[str, tuple[str, ...]] = {
    "Model": ("output", "ann", "maxpool", "calib", "calib_limit", "calib_rule", "percentile", "per_channel"),
    "Data": ("data", "limit", "batch_size", "mean", "std", "scale", "resize", "crop", "layout"),
    "Simulation": ("T", "tau", "tau_data", "tau_target", "latency_budget", "tau_max", "compare_baseline",
                   "method", "dead_zone", "method_criterion", "device", "ray_address", "workers"),
    "Output": ("json_out", "csv_out", "plot", "top5"),
}


class SectionedCommand(click.Command):
    """A command whose --help lists its options under the sections of :data:`HELP_SECTIONS`."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records: dict[str, list[tuple[str, str]]] = {name: [] for name in [*HELP_SECTIONS, "Other"]}
        for param in self.get_params(ctx):
            rec = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if rec is None:
                continue
            section = next((s for s, names in HELP_SECTIONS.items() if param.name in names), "Other")
            records[section].append(rec)
        for section, recs in records.items():
            if recs:
                with formatter.section(f"{section} options" if section != "Other" else "Other options"):
                    formatter.write_dl(recs)


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


def plot_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--plot: the format is the suffix's, checked while the options are parsed (before any work)."""
    from srp_onnx.errors import UsageError
    from srp_onnx.plot import figure_format

    if value is not None:
        try:
            figure_format(value)
        except UsageError as e:
            raise click.UsageError(str(e), ctx) from None
    return value


TAU_AUTO_ONLY = ("tau_data", "tau_target", "latency_budget", "tau_max")
CALIB_ONLY = ("calib_limit", "calib_rule", "percentile", "per_channel")

CONVERSION_ONLY = ("calib", "calib_limit", "calib_rule", "percentile", "per_channel", "maxpool")
PREPROCESSING = ("mean", "std", "scale", "resize", "crop", "layout")


def given(name: str) -> bool:
    """The user gave option ``name`` on the command line (not its default)."""
    ctx = click.get_current_context()
    return ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)


def warn_ignored(names: tuple[str, ...], why: str) -> None:
    """Say on stderr which of the options the user gave explicitly have no effect, and why (once each)."""
    warned = click.get_current_context().meta.setdefault("srp_onnx.warned", set())
    names_given = [n for n in names if given(n) and n not in warned]
    warned.update(names_given)
    if names_given:
        flags = ", ".join("--" + n.replace("_", "-") for n in names_given)
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


def warn_alone(tau: str | None, calib: str | None, method: str | None = None) -> None:
    """Options that act only together with another one, given without it (checked before any work)."""
    if method == "auto":  # --method auto reads --tau-data, --tau-target and --latency-budget too
        if tau != "auto":
            warn_ignored(("tau_max",), "--method auto tries its own taus")
    elif tau != "auto":
        has_method = "method" in click.get_current_context().params  # eval's --method auto reads them too
        warn_ignored(TAU_AUTO_ONLY, "used only with --tau auto" + (" or --method auto" if has_method else ""))
    elif given("latency_budget"):
        warn_ignored(("tau_target",), "--latency-budget chooses tau for tau + T = budget instead")
    if calib is None:
        warn_ignored(CALIB_ONLY, "used only with --calib")
    elif click.get_current_context().params.get("calib_rule") == "max":
        warn_ignored(("percentile",), "--calib-rule max takes the maximum")
