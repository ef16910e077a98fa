"""What the commands share: open a model (spiking or ANN), its preprocessing, its data.

The CLI only parses options and prints; this module does the work.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import onnx

from srp_onnx import fileformat
from srp_onnx.convert import ConvertOptions, Plan, ann_from_snn, convert
from srp_onnx.data import METADATA_KEY, PRESETS, Dataset, Preprocessing, open_dataset
from srp_onnx.errors import DataError, UsageError
from srp_onnx.load import read_model
from srp_onnx.notes import Note, NoteKind
from srp_onnx.progress import NULL_PROGRESS, Progress


@dataclasses.dataclass
class Loaded:
    snn: onnx.ModelProto
    ann: onnx.ModelProto | None
    plan: Plan | None  # set when the model was converted on the fly
    input_shape: tuple[int, ...]  # per sample
    notes: list[Note]  # what conversion did (convert's notes, also kept in the file's metadata)
    warnings: list[Note] = dataclasses.field(default_factory=list)  # what the caller should tell the user

    @property
    def metadata(self) -> dict[str, str]:
        return fileformat.metadata(self.snn)

    @property
    def maxpool_swapped(self) -> bool:
        """MaxPool was replaced by AvgPool: the spiking network is a variant of the ANN."""
        return any(n.kind is NoteKind.MAXPOOL_TO_AVGPOOL for n in self.notes)


@dataclasses.dataclass
class CalibOptions:
    data: str | None = None
    limit: int = 1000
    batch_size: int = 64


def _input_shape(model: onnx.ModelProto, name: str) -> tuple[int, ...]:
    vi = next(i for i in model.graph.input if i.name == name)
    return tuple(int(d.dim_value) for d in vi.type.tensor_type.shape.dim[1:])


def open_model(path: str | os.PathLike[str], options: ConvertOptions, calib: CalibOptions,
               overrides: dict | None = None, cluster=None, progress: Progress = NULL_PROGRESS) -> Loaded:
    """A spiking model as it is, or an ANN converted now (calibrated if it needs it; ``progress``
    counts the calibration images).

    ``cluster`` (a srp_onnx.distributed.Cluster): calibrate on its workers (the same thresholds).
    """
    raw = read_model(path)
    if fileformat.is_spiking(raw):
        sf = fileformat.read(raw, f"'{path}'")
        return Loaded(raw, ann_from_snn(raw), None, _input_shape(raw, sf.input), sf.notes)
    warnings: list[Note] = []

    def run_calibration(p: Plan) -> None:
        from srp_onnx.calibrate import calibrate

        pre = resolve_preprocessing(p.graph.metadata, p.input_shape(), calib.data or "", overrides, warnings)
        ds = open_dataset(calib.data, split="calib", preprocessing=pre, limit=calib.limit)
        how = dict(rule=options.calib_rule, percentile=options.percentile, per_channel=options.per_channel)
        if cluster is None:
            calibrate(p, (x for x, _ in model_batches(ds, calib.batch_size, p.input_shape())), **how,
                      total=len(ds), progress=progress)
            return
        source = DataSource.of(ds, calib.data, calib.batch_size, p.input_shape(), calib.limit)
        calibrate(p, None, collect=lambda model, sites: cluster.calib_stats(
            model, p.input.name, sites, source, per_channel=options.per_channel), **how)

    snn, p = convert(path, options, calib=run_calibration if calib.data else None)
    return Loaded(snn, p.ann_model(), p, p.input_shape(), p.notes, warnings)


def open_ann(path: str | os.PathLike[str], loaded: Loaded) -> onnx.ModelProto:
    """The ANN of ``--ann``, normalized as convert does: the logits as its one output, any batch size.

    Without this, onnxruntime's first output could be a label or a probability head (skl2onnx puts
    the label first) and a model exported with batch 1 could not run a batch. It must take the
    spiking model's input; a file other than the one converted gets a warning (it is shown as given).
    """
    from srp_onnx.convert import IR_VERSION, load_normalized
    from srp_onnx.graph import ValueInfo, to_onnx
    from srp_onnx.load import file_sha256
    from srp_onnx.passes import PassContext

    graph = load_normalized(path, PassContext())  # MaxPool stays as it is: this is the ANN the user has
    inp = graph.inputs[0]
    shape = tuple(inp.shape[1:]) if inp.shape else None
    if shape != tuple(loaded.input_shape):
        raise UsageError(f"'{path}': its input '{inp.name}' has per-sample shape {shape}, the spiking "
                         f"model's has {tuple(loaded.input_shape)}. Give the ANN the model was converted from.",
                         param="ann")
    source = loaded.metadata.get(fileformat.Key.SOURCE_SHA256)
    if source and source != file_sha256(path):
        loaded.warnings.append(Note(NoteKind.ANN_NOT_SOURCE, f"'{path}' is not the file this spiking model was "
                                    "converted from (its sha256 differs); its accuracy is shown as it is."))
    graph.outputs = [ValueInfo(graph.outputs[0].name, None)]
    graph.prune()
    return to_onnx(graph, ir_version=IR_VERSION)


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError("give comma-separated numbers, e.g. 0.5,0.5,0.5.", param=what, value=text) from None


def resolve_preprocessing(metadata: dict[str, str], input_shape: tuple[int, ...], data_spec: str,
                          overrides: dict | None = None, warnings: list[Note] | None = None) -> Preprocessing:
    """The model's own preprocessing (metadata), else one inferred from its input shape; then overrides.

    A guess (no metadata, no mean/std given) is added to ``warnings`` once.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if METADATA_KEY in metadata:
        base = Preprocessing.from_json(metadata[METADATA_KEY], source="the model's metadata")
    else:
        layout, channels, size = "NCHW", 1, None
        if len(input_shape) == 3:
            if input_shape[0] in (1, 3) or input_shape[-1] not in (1, 3):
                channels, size = input_shape[0], (input_shape[1], input_shape[2])
            else:
                layout, channels, size = "NHWC", input_shape[-1], (input_shape[0], input_shape[1])
        scale = PRESETS[data_spec].scale if data_spec in PRESETS else 255.0
        base = Preprocessing(scale=scale, size=size, layout=layout, channels=channels, source="the input shape")
        if not overrides.keys() & {"mean", "std"} and data_spec and not str(data_spec).endswith(".npz"):
            note = Note(NoteKind.PREPROCESSING_GUESSED, f"the model has no preprocessing metadata; using pixels / "
                        f"{scale:g} (give the mean, std and scale to change it)")
            if warnings is not None and note not in warnings:
                warnings.append(note)
    fields = {}
    for k in ("mean", "std"):
        if k in overrides:
            fields[k] = _floats(overrides[k], k)
    for k in ("scale", "resize", "crop", "layout"):
        if k in overrides:
            fields[k] = overrides[k]
    return dataclasses.replace(base, **fields) if fields else base


def open_data(spec: str, loaded: Loaded, *, split: str = "test", limit: int | None = None,
              overrides: dict | None = None) -> Dataset:
    pre = resolve_preprocessing(loaded.metadata, loaded.input_shape, spec, overrides, loaded.warnings)
    return open_dataset(spec, split=split, preprocessing=pre, limit=limit)


class DataSource:
    """Model-input batches of one dataset split, re-openable anywhere that sees the same path.

    What a distributed worker gets instead of images: it opens the dataset itself (a shared
    filesystem, or a built-in name) with the same preprocessing, and reads its index range
    with :meth:`batches`. The opened dataset is cached per process and never pickled.
    """

    def __init__(self, spec: str | os.PathLike[str], *, split: str, preprocessing: Preprocessing | None,
                 limit: int | None, batch_size: int, input_shape: tuple[int, ...]):
        from srp_onnx.data.builtin import BUILTIN_NAMES

        spec = str(spec)
        # Workers need not share the driver's working directory: an existing path travels absolute.
        if spec not in BUILTIN_NAMES and os.path.exists(spec):
            spec = os.path.abspath(spec)
        self.spec, self.split, self.preprocessing, self.limit = spec, split, preprocessing, limit
        self.batch_size, self.input_shape = batch_size, tuple(input_shape)
        self._ds: Dataset | None = None

    @classmethod
    def of(cls, ds: Dataset, spec: str | os.PathLike[str], batch_size: int, input_shape: tuple[int, ...],
           limit: int | None = None) -> DataSource:
        """The source of a dataset opened from ``spec`` (and ``limit``), keeping the opened copy here."""
        src = cls(spec, split=ds.split, preprocessing=ds.preprocessing, limit=limit, batch_size=batch_size,
                  input_shape=input_shape)
        src._ds = ds
        return src

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_ds": None}

    def open(self) -> Dataset:
        if self._ds is None:
            self._ds = open_dataset(self.spec, split=self.split, preprocessing=self.preprocessing, limit=self.limit)
        return self._ds

    def __len__(self) -> int:
        return len(self.open())

    def batches(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return model_batches(self.open(), self.batch_size, self.input_shape, start, stop)


def model_batches(ds: Dataset, batch_size: int, input_shape: tuple[int, ...], start: int = 0,
                  stop: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Dataset batches shaped as the model's input (flattened for MLPs), checked for shape and values.

    ``start``/``stop``: only samples start..stop-1 (a distributed worker's shard).
    """
    for x, y in ds.batches(batch_size, start, stop):
        if tuple(x.shape[1:]) != tuple(input_shape):
            if int(np.prod(x.shape[1:])) == int(np.prod(input_shape)) and len(input_shape) == 1:
                x = x.reshape(len(x), -1)
            elif sorted(x.shape[1:]) == sorted(input_shape) and ds.preprocessed:
                raise DataError(f"{ds.where}: samples have shape {tuple(x.shape[1:])} but the model expects "
                                f"{tuple(input_shape)}: float data is used as it is, so store it in the model's "
                                f"layout ({_transpose_hint(tuple(x.shape[1:]), tuple(input_shape))}), or store "
                                "raw uint8 images, which are laid out for the model.")
            else:
                raise DataError(f"{ds.where}: samples have shape {tuple(x.shape[1:])} but the model expects "
                                f"{tuple(input_shape)}. Use data of the model's input size (or resize and crop it).")
        if not np.isfinite(x).all():
            raise DataError(f"{ds.where}: the input holds NaN or Inf values. Clean the data.")
        yield np.ascontiguousarray(x, dtype=np.float32), y


def _transpose_hint(have: tuple[int, ...], want: tuple[int, ...]) -> str:
    """The np.transpose that turns samples shaped ``have`` into ``want`` (batch axis first)."""
    import itertools

    for perm in itertools.permutations(range(len(have))):
        if tuple(have[k] for k in perm) == want:
            axes = (0, *(k + 1 for k in perm))
            return f"np.transpose(x, {axes})"
    return "transpose it"
