"""`srp-onnx`: convert ANN ONNX graphs to SRP spiking graphs and evaluate them.

Exit codes: 0 ok; 1 a requested check failed; 2 bad usage, bad input or an
unsupported model (one line on stderr); 3 an internal error (rerun with -v
for the traceback); 130 interrupted.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import click

from srp_onnx import __version__
from srp_onnx.errors import SrpOnnxError, UsageError, quote, safe
from srp_onnx.io import Terminated, check_outputs
from srp_onnx.load import external_files

from .options import (
    CONVERSION_ONLY,
    PREPROCESSING,
    SectionedCommand,
    convert_options,
    data_options,
    method_options,
    plot_path,
    preprocessing_options,
    ray_options,
    warn_alone,
    warn_ignored,
)
from .progress import cli_progress


def _error_text(e: SrpOnnxError) -> str:
    """A library error in the CLI's words: the parameter at fault named as the option the user typed."""
    flags = {p.name: p.opts[0] for cmd in main.commands.values() for p in cmd.params if p.opts}
    flag = flags.get(e.param) if e.param else None
    if flag is None:
        return str(e)
    text = f"{flag} {e.value}: {e.message}" if e.has_value else f"{flag}: {e.message}"
    if e.suggest:
        text += f" (that is: {' or '.join(f'{flag} {v}' for v in e.suggest)})"
    return text


class Group(click.Group):
    """Turns library errors into one line and exit code 2; no tracebacks unless -v."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Click's own errors as one line too (click prints usage, a hint and the error on four)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `srp-onnx inspect m.onnx | head` ends quietly
        # onnxruntime's telemetry warns on stderr (a second line) where $HOME is unwritable; the CLI sends none.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        if not sys.warnoptions:  # Pillow/numpy/torch warnings are for developers (-W or PYTHONWARNINGS show them)
            warnings.simplefilter("ignore")
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            e.show()  # bare `srp-onnx COMMAND`: its help
            sys.exit(e.exit_code)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "srp-onnx"
            message = " ".join(e.format_message().split())  # click lists choices on several lines
            click.echo(f"srp-onnx: error: {safe(message)} (see '{where} --help')", err=True)
            sys.exit(2)
        except click.ClickException as e:
            click.echo(f"srp-onnx: error: {safe(' '.join(e.format_message().split()))}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("srp-onnx: interrupted; nothing was written.", err=True)
            sys.exit(130)
        except Terminated as e:
            click.echo(f"srp-onnx: {e} received; stopped, and the file being written was removed.", err=True)
            sys.exit(128 + e.signum)
        _flush_stdout()
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SrpOnnxError as e:
            click.echo(f"srp-onnx: error: {safe(_error_text(e))}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as e:
            click.echo(f"srp-onnx: {str(e) or 'interrupted; nothing was written'}.", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, Terminated):
            raise
        except Exception as e:  # noqa: BLE001
            if isinstance(e, OSError) and _raised_by_echo(e):
                _stdout_failed(e)  # stdout itself failed (`>/dev/full`): one line, exit 2
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            click.echo(f"srp-onnx: internal error: {type(e).__name__}: {safe(e)}. Rerun with -v for details "
                       "and report it.", err=True)
            sys.exit(3)


def _flush_stdout() -> None:
    """Results reach stdout last (files are written first); if stdout cannot take them (``>/dev/full``),
    say so in one line and exit 2 instead of Python's exit 120 with a second message at shutdown."""
    try:
        sys.stdout.flush()
    except OSError as e:
        _stdout_failed(e)
    except (ValueError, AttributeError):  # closed or not a file
        return


def _raised_by_echo(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "echo" and tb.tb_frame.f_globals.get("__name__") == "click.utils":
            return True
        tb = tb.tb_next
    return False


def _stdout_failed(e: OSError) -> None:
    try:
        with open(os.devnull, "w") as null:  # so the interpreter's own last flush has nowhere to fail
            os.dup2(null.fileno(), sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
    reason = os.strerror(e.errno) if e.errno else str(e)
    click.echo(f"srp-onnx: error: cannot write to standard output ({reason}); the output files, if any, "
               "were written first.", err=True)
    sys.exit(2)


def _lines(text: str) -> str:
    """A table made by the library, each line made :func:`safe` (layer names come from the model)."""
    return "\n".join(safe(line) for line in text.split("\n"))


def _paths(*specs: str | None) -> list[str]:
    """The data specs that are files or folders (not the built-in names ``mnist``/``digits``)."""
    from srp_onnx.data.builtin import BUILTIN_NAMES

    return [s for s in specs if s and s not in BUILTIN_NAMES]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="srp-onnx")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks of internal errors and why CUDA is not used.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bars (they are drawn only when stderr is a terminal anyway).")
@click.pass_context
def main(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """Convert ANN ONNX models into spiking networks with SRP (AAAI 2023) and evaluate them."""
    ctx.obj = {"verbose": verbose, "quiet": quiet}


def _note_provider(device: str) -> None:
    """Once per run, where it matters (the simulations of eval and analyze): a GPU build of onnxruntime that
    falls back to the CPU says so in one short line; -v gives the reason. A CPU-only build says nothing."""
    if device != "auto":
        return
    from srp_onnx.ort import CudaStatus, cuda_status

    status = cuda_status()
    if status not in (CudaStatus.OK, CudaStatus.NOT_BUILT):
        verbose = (click.get_current_context().find_root().obj or {}).get("verbose")
        click.echo(f"srp-onnx: running on the CPU: {status.describe()}" if verbose else
                   "srp-onnx: running on the CPU (CUDA did not load; -v says why)", err=True)


def _parse_tau(tau: str | None) -> int | str | None:
    if tau is None or tau == "auto":
        return tau
    try:
        return int(tau)
    except ValueError:
        raise click.BadParameter(f"'{tau}': give a whole number of steps or 'auto'.", param_hint="--tau") from None


def _convert_opts(tau: int | str | None, maxpool: str, percentile: float, calib_rule: str, per_channel: bool,
                  default_tau: int = 4):
    from srp_onnx.convert import ConvertOptions

    opts = ConvertOptions(tau=tau if isinstance(tau, int) else default_tau, maxpool=maxpool,
                          percentile=percentile, calib_rule=calib_rule, per_channel=per_channel)
    opts.validate()
    return opts


def _default_tau(loaded) -> int:
    """The model's default tau (open_model checked the file; a conversion just wrote it)."""
    from srp_onnx.fileformat import Key

    return int(loaded.metadata.get(Key.TAU, "4"))


def _cluster(ray_address: str | None, workers: int | None, device: str):
    """The Ray cluster of --ray, closed when the command ends (however it ends); None without --ray."""
    if ray_address is None:
        warn_ignored(("workers",), "it sets the number of Ray workers of --ray")
        return None
    from srp_onnx.distributed import Cluster

    return click.get_current_context().with_resource(Cluster(ray_address, workers=workers, device=device,
                                                             progress=cli_progress()))


def _auto_tau(loaded, data: str | None, T: int | None, budget: int | None, max_tau: int, batch_size: int,
              device: str, overrides: dict, test_data: str | None = None, cluster=None):
    """Choose tau on the calibration split of ``data``; print the curve seen (stderr).

    ``test_data`` is the set the accuracy is then reported on (eval, analyze): a single-split
    .npz cannot be both, since choosing on it would tune tau on the test images.
    """
    from srp_onnx.evaluate import choose_tau
    from srp_onnx.pipeline import DataSource, model_batches, open_data

    if not data:
        raise UsageError("--tau auto needs data to choose on: give --tau-data DATA (a calibration set, not the "
                         "test set).")
    if str(data).endswith(".npz") and test_data is not None and Path(data).resolve() == Path(test_data).resolve():
        raise UsageError(f"--tau auto: '{data}' is the evaluation data (--data), an .npz with a single split, so "
                         "tau would be tuned on the test images. Give other data with --tau-data, e.g. a "
                         "held-out part of the training set.")
    ds = open_data(data, loaded, split="calib", overrides=overrides)
    how = dict(T=None if budget else (T or 8), budget=budget, max_tau=max_tau,
               default=_default_tau(loaded))
    if cluster is not None:
        choice = cluster.choose_tau(loaded.snn, DataSource.of(ds, data, batch_size, loaded.input_shape), **how)
    else:
        choice = choose_tau(loaded.snn, lambda: model_batches(ds, batch_size, loaded.input_shape), device=device,
                            total=len(ds), progress=cli_progress(), **how)
    click.echo(choice.format(), err=True)
    if choice.flat:
        click.echo(f"srp-onnx: warning: --tau auto: every tau scored {choice.curve[0][2]:.2f} % on {quote(data)}, "
                   f"which cannot tell them apart (is it data the model was trained on?); keeping tau = {choice.tau}.",
                   err=True)
    return choice


def _auto_method(loaded, data: str, T: int, criterion: str | None, target: int | None, budget: int | None,
                 batch_size: int, device: str, overrides: dict, test_data: str, limit: int):
    """``--method auto``: choose rule and tau on the calibration split of ``data``; print what it saw (stderr)."""
    from srp_onnx.evaluate import choose_method
    from srp_onnx.pipeline import model_batches, open_data

    if test_data and str(data).endswith(".npz") and Path(data).resolve() == Path(test_data).resolve():
        raise UsageError(f"--method auto: '{data}' is the evaluation data (--data), an .npz with a single split, so "
                         "the rule would be tuned on the test images. Give other data with --tau-data.")
    if criterion is None:
        criterion = "target" if target else "budget" if budget else "safe"
    if criterion == "target" and not target:
        raise click.BadParameter("the target criterion needs --tau-target T.", param_hint="--method-criterion")
    if criterion == "budget" and not budget:
        raise click.BadParameter("the budget criterion needs --latency-budget N.", param_hint="--method-criterion")
    ds = open_data(data, loaded, split="calib", limit=limit, overrides=overrides)
    choice = choose_method(loaded.snn, lambda: model_batches(ds, batch_size, loaded.input_shape), T=T,
                           criterion=criterion, target=target, budget=budget, device=device, total=len(ds),
                           progress=cli_progress())
    click.echo(choice.format(), err=True)
    return choice


def _note_text(note) -> str:
    """A note as the CLI says it: the library's text, plus the option that caused it where one did."""
    from srp_onnx.notes import NoteKind

    option = {NoteKind.MAXPOOL_TO_AVGPOOL: "--maxpool avg", NoteKind.MAXPOOL_GATED: "--maxpool gate"}.get(note.kind)
    return f"{note.text} ({option})" if option else note.text


def _warn(notes: list) -> None:
    """The library's notes and warnings (notes.Note), each once, on stderr."""
    for note in dict.fromkeys(notes):
        click.echo(f"srp-onnx: {'warning: ' if note.warning else ''}{safe(_note_text(note))}", err=True)


def _warn_unused_options(loaded, model: str) -> None:
    if loaded.plan is None:
        warn_ignored(CONVERSION_ONLY, f"'{model}' is converted already (convert the ANN again to change them)")
    elif not any(s.source.startswith("calibration") for s in loaded.plan.sites):
        warn_ignored(("calib", "calib_limit", "calib_rule", "percentile", "per_channel"),
                     "every neuron layer takes its threshold from the graph (a Clip bound or a QCFS lambda)")


def _site_table(sites: list) -> str:
    rows = [("layer", "kind", "shape", "theta", "theta from")]
    for s in sites:
        theta = "?" if s.theta is None else f"{s.theta:.6g}"
        kind = f"qcfs L={s.levels}" if s.kind == "qcfs" else s.kind
        shape = "x".join(map(str, s.shape)) if s.shape else "?"
        rows.append((safe(s.name), kind, shape, theta, safe(s.source) or "needs --calib"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


@main.command(cls=SectionedCommand)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output file (default: MODEL with .snn.onnx).")
@convert_options
@preprocessing_options
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@method_options
@ray_options
def convert(model: str, output: str | None, tau: str | None, tau_data: str | None, tau_target: int | None,
            latency_budget: int | None, tau_max: int, calib: str | None, calib_limit: int, calib_rule: str,
            percentile: float, per_channel: bool, maxpool: str, batch_size: int, method: str | None,
            dead_zone: float | None, method_criterion: str | None, ray_address: str | None,
            workers: int | None, **pre: Any) -> None:
    """Convert an ANN ONNX model into an SRP spiking step graph (with --method, another neuron rule)."""
    from srp_onnx.convert import save_model
    from srp_onnx.fileformat import set_default_tau, set_method
    from srp_onnx.neuron import Method
    from srp_onnx.pipeline import CalibOptions, open_model

    tau_v = _parse_tau(tau)
    if method == "auto" and tau_v == "auto":
        raise click.BadParameter("--method auto chooses tau too; leave out --tau auto.", param_hint="--method")
    opts = _convert_opts(tau_v, maxpool, percentile, calib_rule, per_channel)
    if method not in (None, "auto"):
        opts.method = Method(method, dead_zone or 0.0)
    warn_alone(tau, calib, method)
    out = Path(output) if output else Path(model).with_suffix("").with_suffix(".snn.onnx") \
        if model.endswith(".onnx") else Path(model + ".snn.onnx")
    check_outputs({"-o/--output": out}, {"the model": model, "the model's weights": external_files(model),
                                          "--calib": _paths(calib), "--tau-data": _paths(tau_data)})
    cluster = _cluster(ray_address, workers, "auto")
    loaded = open_model(model, opts, CalibOptions(calib, calib_limit, batch_size), pre, cluster=cluster,
                        progress=cli_progress())
    p = loaded.plan
    if p is None:
        raise UsageError(f"'{model}' is already a converted spiking model; convert takes the ANN.")
    _warn_unused_options(loaded, model)
    for note in p.notes:
        click.echo(f"note: {safe(_note_text(note))}", err=True)
    if tau_v == "auto":
        choice = _auto_tau(loaded, tau_data or calib, tau_target, latency_budget, tau_max, batch_size, "auto", pre,
                           cluster=cluster)
        opts.tau = choice.tau
        set_default_tau(loaded.snn, choice.tau)
    if method == "auto":
        if not (tau_data or calib):
            raise UsageError("--method auto needs data to choose on: give --tau-data DATA (a calibration set, not "
                             "the test set).")
        mc = _auto_method(loaded, tau_data or calib, tau_target or 32, method_criterion, tau_target, latency_budget,
                          batch_size, "auto", pre, test_data="", limit=calib_limit)
        opts.tau, opts.method = mc.tau, mc.method
        set_default_tau(loaded.snn, mc.tau)
        set_method(loaded.snn, mc.method)
    save_model(loaded.snn, out)  # the file first: the results survive a closed stdout (`| true`)
    _warn(loaded.warnings)
    click.echo(_site_table(p.sites))
    click.echo(f"wrote {quote(out)} ({len(p.sites)} neuron layers, tau = {opts.tau}, neuron rule "
               f"{opts.method.label()})")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--maxpool", type=click.Choice(["error", "gate", "avg"]), default="error", show_default=True)
def inspect(model: str, maxpool: str) -> None:
    """Show what convert would do: neuron sites, thresholds' sources, dropped heads, failures."""
    from srp_onnx import fileformat
    from srp_onnx.convert import ConvertOptions, inferred_shapes, plan, probe_shapes
    from srp_onnx.load import read_model

    raw = read_model(model)
    if fileformat.is_spiking(raw):  # a converted model: what it was converted with
        sf = fileformat.read(raw, quote(model))
        about = fileformat.describe(sf.metadata)
        click.echo(f"spiking model converted by srp-onnx {safe(about['version'])} from {quote(about['source'])} "
                   f"(sha256 {safe(about['source_sha256'][:12])}), default tau = {sf.tau}")
        click.echo(f"input {quote(sf.input)}, logits {quote(sf.logits)}")
        click.echo(_site_table(sf.sites))
        for note in sf.notes:
            click.echo(f"note: {safe(_note_text(note))}")
        return
    del raw
    p = plan(model, ConvertOptions(maxpool=maxpool), collect=True)
    if p.problems:
        inferred_shapes(p)  # what shape inference knows; running the graph could fail on the problem
    else:
        probe_shapes(p)
    click.echo(f"input {quote(p.input.name)} {safe(list(p.input.shape or []))}, logits {quote(p.logits)} "
               f"{list(p.logits_shape or [])}")
    if p.sites:  # no header over nothing when the problems come before any neuron layer is found
        click.echo(_site_table(p.sites))
    for note in p.notes:
        click.echo(f"note: {safe(_note_text(note))}")
    need = [s.name for s in p.sites if s.theta is None]
    if need:
        click.echo(f"needs calibration data (--calib) for {len(need)} ReLU layer(s)")
    if p.problems:
        for e in p.problems[1:]:
            click.echo(f"would fail: {safe(e)}")
        click.echo(f"convertible: no ({len(p.problems)} problem(s))")
        raise p.problems[0]
    click.echo("convertible: yes")


@main.command(name="eval", cls=SectionedCommand)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "data", required=True,
              help=".npz (x, y), CIFAR folder, MNIST-format (IDX) folder, ImageNet-style folder, mnist, digits.")
@click.option("--T", "T", type=int, default=8, show_default=True, help="Time steps after pre-simulation.")
@click.option("--ann", type=click.Path(dir_okay=False), default=None, help="The ANN, to report its accuracy.")
@click.option("--compare-baseline", is_flag=True, help="Also run tau = 0 (plain QCFS conversion).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write all results here.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None,
              help="The per-step table as CSV: one row per method and t (top-1 and top-5).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, callback=plot_path,
              help="Figure of accuracy vs t and vs total steps tau + t; .png, .pdf or .svg.")
@click.option("--top5", is_flag=True, help="Print top-5 accuracy too.")
@method_options
@convert_options
@preprocessing_options
@data_options
@ray_options
def eval_cmd(model: str, data: str, T: int, ann: str | None, compare_baseline: bool, json_out: str | None,
             csv_out: str | None, plot: str | None, top5: bool, method: str | None, dead_zone: float | None,
             method_criterion: str | None, tau: str | None, tau_data: str | None, tau_target: int | None,
             latency_budget: int | None, tau_max: int, calib: str | None, calib_limit: int, calib_rule: str,
             percentile: float, per_channel: bool, maxpool: str, batch_size: int, limit: int | None,
             device: str, ray_address: str | None, workers: int | None, **pre: Any) -> None:
    """Accuracy of the spiking model at every time step (and of the ANN beside it)."""
    from srp_onnx.evaluate import evaluate, format_csv, format_table
    from srp_onnx.io import write_text
    from srp_onnx.neuron import MAX_T
    from srp_onnx.pipeline import CalibOptions, DataSource, model_batches, open_ann, open_data, open_model

    if not 1 <= T <= MAX_T:
        raise click.BadParameter(f"{T}: the number of time steps must be 1 to {MAX_T}.", param_hint="--T")
    tau_v = _parse_tau(tau)
    if method == "auto" and tau_v == "auto":
        raise click.BadParameter("--method auto chooses tau too; leave out --tau auto.", param_hint="--method")
    opts = _convert_opts(tau_v, maxpool, percentile, calib_rule, per_channel)
    warn_alone(tau, calib, method)
    check_outputs({"--json": json_out, "--csv": csv_out, "--plot": plot},
                  {"the model": model, "the model's weights": external_files(model), "--data": _paths(data),
                   "--ann": ann, "--calib": _paths(calib), "--tau-data": _paths(tau_data)})
    cluster = _cluster(ray_address, workers, device)
    loaded = open_model(model, opts, CalibOptions(calib, calib_limit, batch_size), pre, cluster=cluster,
                        progress=cli_progress())
    _warn_unused_options(loaded, model)
    if loaded.maxpool_swapped:  # the SNN is the AvgPool variant: show both networks' accuracy
        original = ann or (model if loaded.plan is not None else None)
        anns = {"ANN (MaxPool)": open_ann(original, loaded)} if original else {}
        anns["ANN (AvgPool)"] = loaded.ann
    elif ann:
        anns = {"ANN": open_ann(ann, loaded)}
    else:
        anns = {"ANN": loaded.ann} if loaded.ann is not None else {}
    choice = None
    if tau_v == "auto":
        choice = _auto_tau(loaded, tau_data or data, tau_target or T, latency_budget, tau_max, batch_size, device, pre,
                           test_data=data, cluster=cluster)
        tau_v = choice.tau
    chosen, method_choice = None, None
    if method == "auto":
        method_choice = _auto_method(loaded, tau_data or data, T, method_criterion, tau_target, latency_budget,
                                     batch_size, device, pre, test_data=data, limit=calib_limit)
        chosen = (method_choice.method, method_choice.tau)
    elif method is not None:
        from srp_onnx.neuron import Method

        chosen = (Method(method, dead_zone or 0.0), tau_v if isinstance(tau_v, int) else _default_tau(loaded))
    ds = open_data(data, loaded, limit=limit, overrides=pre)
    if ds.preprocessed:
        warn_ignored(PREPROCESSING, f"'{data}' holds float model input, which is used as it is")
    settings = {"model": str(model), "data": data, "split": ds.split, "batch_size": batch_size, "limit": limit,
                "preprocessing": ("none: the .npz holds float model input, used as it is" if ds.preprocessed
                                  else json.loads(ds.preprocessing.to_json()))}
    _note_provider(device)
    how = dict(T=T, tau=tau_v if isinstance(tau_v, int) else None, ann=anns, compare_baseline=compare_baseline,
               chosen=chosen, chosen_label="auto" if method_choice is not None else "", settings=settings)
    if cluster is not None:
        report = cluster.evaluate(loaded.snn, DataSource.of(ds, data, batch_size, loaded.input_shape, limit), **how)
    else:
        report = evaluate(loaded.snn, lambda: model_batches(ds, batch_size, loaded.input_shape), total=len(ds),
                          device=device, progress=cli_progress(), **how)
    if choice is not None:
        report.settings["tau_auto"] = choice.to_json()
    if method_choice is not None:
        report.settings["method_auto"] = method_choice.to_json()
    if json_out:  # the files first: the results survive a closed stdout (`| true`)
        write_text(json_out, json.dumps(report.to_json(), indent=2))
    if csv_out:
        write_text(csv_out, format_csv(report))
    if plot:
        from srp_onnx.plot import plot_accuracy

        plot_accuracy(report, plot)
    click.echo(_lines(format_table(report)))
    if top5:
        click.echo(_lines(format_table(report, "top5")))
    _warn(loaded.warnings + report.warnings)


@main.command(cls=SectionedCommand)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "data", required=True, help="Data as for eval.")
@click.option("--T", "T", type=click.IntRange(min=1), default=8, show_default=True,
              help="Time steps after pre-simulation.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write all results here.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, callback=plot_path,
              help="Figure of the per-layer error cases, firing rates and silenced shares; .png, .pdf or .svg.")
@convert_options
@preprocessing_options
@data_options
@ray_options
def analyze(model: str, data: str, T: int, json_out: str | None, plot: str | None, tau: str | None,
            tau_data: str | None, tau_target: int | None, latency_budget: int | None, tau_max: int,
            calib: str | None, calib_limit: int, calib_rule: str, percentile: float, per_channel: bool, maxpool: str,
            batch_size: int, limit: int | None, device: str, ray_address: str | None, workers: int | None,
            **pre: Any) -> None:
    """Per layer, tau = 0 vs SRP: unevenness-error cases, firing rates, silenced neurons, SOPs, energy."""
    from srp_onnx.analysis import analyze as run_analysis
    from srp_onnx.analysis import format_analysis
    from srp_onnx.io import write_text
    from srp_onnx.pipeline import CalibOptions, DataSource, model_batches, open_data, open_model

    check_outputs({"--json": json_out, "--plot": plot},
                  {"the model": model, "the model's weights": external_files(model), "--data": _paths(data),
                   "--calib": _paths(calib), "--tau-data": _paths(tau_data)})
    tau_v = _parse_tau(tau)
    opts = _convert_opts(tau_v, maxpool, percentile, calib_rule, per_channel)
    warn_alone(tau, calib)
    cluster = _cluster(ray_address, workers, device)
    loaded = open_model(model, opts, CalibOptions(calib, calib_limit, batch_size), pre, cluster=cluster,
                        progress=cli_progress())
    _warn_unused_options(loaded, model)
    if tau_v == "auto":
        tau_v = _auto_tau(loaded, tau_data or data, tau_target or T, latency_budget, tau_max, batch_size, device,
                          pre, test_data=data, cluster=cluster).tau
    if not isinstance(tau_v, int):
        tau_v = _default_tau(loaded)
    ds = open_data(data, loaded, limit=limit, overrides=pre)
    _note_provider(device)
    if cluster is not None:
        an = cluster.analyze(loaded.snn, DataSource.of(ds, data, batch_size, loaded.input_shape, limit), T=T, tau=tau_v)
    else:
        an = run_analysis(loaded.snn, (x for x, _ in model_batches(ds, batch_size, loaded.input_shape)), T=T,
                          tau=tau_v, device=device, total=len(ds), progress=cli_progress())
    if json_out:  # the files first: the results survive a closed stdout (`| true`)
        write_text(json_out, json.dumps(an.to_json(), indent=2))
    if plot:
        from srp_onnx.plot import plot_analysis

        plot_analysis(an, plot, title=f"{Path(model).name} on {data}")
    _warn(loaded.warnings)
    click.echo(_lines(format_analysis(an)))


@main.command()
@click.option("--T", "T", type=int, default=32, show_default=True)
@click.option("--tau", type=int, default=4, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def demo(T: int, tau: int, device: str) -> None:
    """Convert the bundled MNIST sample and compare ANN, plain QCFS (tau = 0) and SRP."""
    from srp_onnx.demo import run_demo

    click.echo(run_demo(T=T, tau=tau, device=device, progress=cli_progress()))


try:  # `train` needs torch only when it runs; its module imports torch lazily
    from .train import train as _train

    main.add_command(_train)
except ImportError:  # pragma: no cover
    pass


if __name__ == "__main__":
    main()
