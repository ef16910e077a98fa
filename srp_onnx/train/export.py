"""ONNX export of trained QCFS networks, and checkpoint loading.

The exported file is what the converter reads: opset 17, IR version 10
(onnxruntime 1.31 reads IR <= 13, onnx 1.23 writes 14), input ``input``
``[batch, C, H, W]``, output ``logits`` ``[batch, classes]``, and metadata
that lets ``srp-onnx`` evaluate it without extra flags::

    srp_onnx.dataset        cifar10 | cifar100 | imagenet | mnist | digits
    srp_onnx.arch           vgg16 | resnet18 | resnet20 | resnet34 | cnn
    srp_onnx.L              QCFS quantization levels
    srp_onnx.ann_accuracy   ANN test top-1 in percent (when it was measured)
    srp_onnx.preprocessing  Preprocessing.to_json() (srp_onnx.data.METADATA_KEY)

Checkpoints: ours are dicts with ``format == CHECKPOINT_FORMAT``; the paper
code saves a plain ``model.state_dict()`` (often from DataParallel/DDP, so
keys start with ``module.``), sometimes wrapped as ``{"state_dict": ...}``
or ``{"model": ...}``. :func:`load_checkpoint` reads all of them.
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from srp_onnx.errors import DataError, UsageError, quote, safe
from srp_onnx.io import write_bytes
from srp_onnx.train.models import build_model

CHECKPOINT_FORMAT = "srp_onnx.train/1"
OPSET = 17
IR_VERSION = 10
EXPORTERS: tuple[str, ...] = ("torchscript", "dynamo")


def training_metadata(dataset: str, arch: str, L: int, ann_accuracy: float | None,
                      preprocessing: Any) -> dict[str, str]:
    """The ``metadata_props`` of an exported model (see the module docstring)."""
    from srp_onnx.data import METADATA_KEY

    meta = {"srp_onnx.dataset": dataset, "srp_onnx.arch": arch, "srp_onnx.L": str(int(L))}
    if ann_accuracy is not None:
        meta["srp_onnx.ann_accuracy"] = f"{ann_accuracy:.2f}"
    meta[METADATA_KEY] = preprocessing.to_json()
    return meta


def _export_bytes(model: nn.Module, example: torch.Tensor, exporter: str) -> onnx.ModelProto:
    with warnings.catch_warnings():
        # TorchScript export is deprecated in torch >= 2.9 but still the most
        # predictable graph for the converter; keep the user's stderr clean.
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            buffer = io.BytesIO()
            torch.onnx.export(model, (example,), buffer, opset_version=OPSET, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              do_constant_folding=True, dynamo=False)
            return onnx.load_from_string(buffer.getvalue())
        batch = torch.export.Dim("batch")
        program = torch.onnx.export(model, (example,), None, opset_version=OPSET, input_names=["input"],
                                    output_names=["logits"], dynamic_shapes=({0: batch},), dynamo=True,
                                    optimize=True, verbose=False)
        if program is None:  # pragma: no cover - torch API contract
            raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
        return program.model_proto


def export_onnx(model: nn.Module, path: str | Path, *, input_shape: tuple[int, ...],
                metadata: Mapping[str, str], exporter: str = "torchscript") -> Path:
    """Export ``model`` (eval mode, on CPU) to ``path`` atomically; returns the path.

    ``input_shape`` is ``(1, C, H, W)``; the batch dimension is exported as
    the symbolic ``batch``. ``metadata`` becomes ``metadata_props``.
    """
    if exporter not in EXPORTERS:
        raise UsageError(f"Unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}.")
    path = Path(path)
    net = copy.deepcopy(_unwrap(model)).to("cpu").eval()
    example = torch.zeros(input_shape, dtype=torch.float32)
    proto = _export_bytes(net, example, exporter)
    if proto.graph.input[0].name != "input" or proto.graph.output[0].name != "logits":  # pragma: no cover
        raise RuntimeError("exported graph lost the 'input'/'logits' names")
    proto.ir_version = IR_VERSION
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, proto.SerializeToString())
    return path


MAX_CHECKPOINT_BYTES = 1 << 32  # 4 GiB: beyond any network this trains


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` through a temp file in the target folder, then ``os.replace``."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, buffer.getvalue())


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DataParallel / DistributedDataParallel wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file to CPU without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Checkpoint {str(path)!r} does not exist; check the path.")
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise DataError(f"Checkpoint {quote(path)} is larger than {MAX_CHECKPOINT_BYTES} bytes; refused.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's warnings would be extra stderr lines
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's text suggests weights_only=False, i.e. running the file's code
        raise DataError(f"Checkpoint {quote(path)} holds Python objects other than tensors and plain "
                        "containers, which are never loaded (loading them could run code from the file); "
                        "save the weights with torch.save(model.state_dict(), path).") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file raises many types
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise DataError(f"Checkpoint {quote(path)} cannot be read as a torch state_dict ({safe(first)}); "
                        "save it with torch.save(model.state_dict(), path).") from None
    if not isinstance(obj, dict):
        raise DataError(f"Checkpoint {str(path)!r} holds a {type(obj).__name__}, not a state_dict; "
                        "save it with torch.save(model.state_dict(), path).")
    return obj


def extract_state_dict(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of our checkpoint or a paper-code checkpoint, ``module.`` prefixes removed."""
    state: Any = obj
    for key in ("model", "state_dict", "net"):
        if isinstance(obj.get(key), Mapping):
            state = obj[key]
            break
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise DataError("The checkpoint contains no tensors; expected a model state_dict.")
    while all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _infer_shapes(arch: str, state: Mapping[str, torch.Tensor]) -> tuple[int, int, int | None]:
    """(in_channels, num_classes, image_size or None) read off the weights' shapes."""
    convs = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 4]
    linears = [(k, v) for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    if not convs or not linears:
        raise DataError(f"The checkpoint has no conv or no linear weights; it is not a {arch} state_dict.")
    in_channels = int(convs[0].shape[1])
    num_classes = int(linears[-1][1].shape[0])
    image_size: int | None = None
    first_in = int(linears[0][1].shape[1])
    if arch == "vgg16":  # Linear 512 * s * s -> 4096, input side 32 * s
        side = round((first_in / 512) ** 0.5)
        image_size = 32 * side
    elif arch == "cnn":  # Linear C * s * s -> hidden after two 2x2 pools, input side 4 * s
        channels = int(convs[-1].shape[0])
        side = round((first_in / channels) ** 0.5)
        image_size = 4 * side
    return in_channels, num_classes, image_size


def load_checkpoint(path: str | Path, arch: str, num_classes: int | None = None, L: int | None = None, *,
                    in_channels: int | None = None, image_size: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``arch`` and load the weights of ``path`` into it (strict, eval mode, CPU).

    Accepts our checkpoints (``best.pt`` / ``last.pt``) and the paper code's
    state_dicts. Arguments left as ``None`` come from our checkpoint's record,
    else from the weights' shapes; ``L`` must be given for paper checkpoints
    (the paper code does not save it). Returns ``(model, info)`` where
    ``info`` holds ``arch``, ``num_classes``, ``L``, ``L_recorded`` (whether the
    checkpoint itself says L: only ours do, so a paper checkpoint's L cannot be
    checked against its weights), ``in_channels``, ``image_size``, and for our
    checkpoints ``dataset`` and ``best_acc``.
    """
    obj = read_checkpoint(path)
    state = extract_state_dict(obj)
    ours = obj.get("format") == CHECKPOINT_FORMAT
    shape_in, shape_classes, shape_size = _infer_shapes(arch, state)
    info: dict[str, Any] = {}
    if ours:
        recorded_arch = obj.get("arch")
        if recorded_arch != arch:
            raise UsageError(f"Checkpoint {str(path)!r} holds a {recorded_arch} network, not {arch}; "
                             f"pass --arch {recorded_arch}.")
        recorded_L = obj.get("L")
        if not (isinstance(recorded_L, int) and not isinstance(recorded_L, bool) and 1 <= recorded_L <= 1 << 16):
            raise DataError(f"Checkpoint {quote(path)} records L = {safe(recorded_L)!s:.20}, not a whole number "
                            "from 1 to 65536; the file is damaged.")
        if L is not None and int(obj["L"]) != L:
            raise UsageError(f"Checkpoint {str(path)!r} was trained with L={obj['L']}, not L={L}; "
                             f"pass --L {obj['L']} or leave it out.")
        L = int(obj["L"])
        info.update(dataset=obj.get("dataset"), best_acc=obj.get("best_acc"), epoch=obj.get("epoch"))
        image_size = image_size if image_size is not None else obj.get("image_size")
    if L is None:
        raise UsageError(f"Checkpoint {str(path)!r} does not record L (paper-code state_dict); pass --L.")
    for name, given, found in (("num_classes", num_classes, shape_classes), ("in_channels", in_channels, shape_in)):
        if given is not None and given != found:
            raise DataError(f"Checkpoint {str(path)!r} has {found} {name.replace('_', ' ')}, the data has {given}; "
                            "use the checkpoint with the dataset it was trained on.")
    if image_size is None:
        image_size = shape_size if shape_size is not None else 32
    model = build_model(arch, shape_classes, L, in_channels=shape_in, image_size=int(image_size))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape of {k} is {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}")
        raise DataError(f"Checkpoint {str(path)!r} does not fit --arch {arch} ({'; '.join(parts)}); "
                        "check --arch, or see srp_onnx/train/models.py for the expected key names.")
    model.load_state_dict(state, strict=False)  # strictness checked above, num_batches_tracked may be absent
    model.eval()
    info.update(arch=arch, num_classes=shape_classes, L=L, L_recorded=ours, in_channels=shape_in,
                image_size=int(image_size))
    return model, info
