"""Read an ONNX file from a stranger safely, and bring it to one working opset.

Checks, in order, each failing with a one-line :class:`ModelError`:
1. the path is a readable, non-empty file that parses as an ONNX ModelProto;
2. external-data locations stay inside the model's folder and exist;
3. every initializer's declared size agrees with its data, and no tensor is
   absurdly large (checked before anything is allocated from it);
4. the model has a graph with inputs, outputs and nodes.
Then the default-domain opset is raised to ``WORKING_OPSET`` where it is
older (newer models are kept as they are), and shapes are inferred.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper, numpy_helper, shape_inference, version_converter

from srp_onnx.errors import ModelError, quote

WORKING_OPSET = 17
MIN_OPSET = 7
MAX_MODEL_BYTES = 1 << 31  # 2 GiB: the graph file, and its external weights in all (protobuf's own limit)
MAX_GENERATED_ELEMENTS = 1 << 28  # 256 M values (1 GiB of floats) made by one node from constants
MAX_TENSOR_ELEMENTS = 1 << 33  # 8 G elements: far beyond any classifier, refuses absurd declarations
_ELEM_SIZE = {
    onnx.TensorProto.FLOAT: 4, onnx.TensorProto.DOUBLE: 8, onnx.TensorProto.FLOAT16: 2,
    onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.INT64: 8, onnx.TensorProto.INT32: 4,
    onnx.TensorProto.INT16: 2, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1, onnx.TensorProto.BOOL: 1,
}


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Parse and validate the file; external data is loaded after its paths are checked."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        if not os.path.lexists(p):
            raise ModelError(f"{quote(p)}: no such file. Check the path.") from None
        raise ModelError(f"{quote(p)}: cannot be read ({os.strerror(e.errno or 0)}). Check the path.") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"{quote(p)}: not a regular file. Give the path of an .onnx model file.")
    if st.st_size > MAX_MODEL_BYTES:
        raise ModelError(f"{quote(p)}: {st.st_size} bytes, more than the {MAX_MODEL_BYTES} bytes a model may have "
                         "(keep large weights as external data).")
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_MODEL_BYTES + 1)
    except OSError as e:
        raise ModelError(f"{quote(p)}: cannot be read ({os.strerror(e.errno or 0)}).") from None
    if not data:
        raise ModelError(f"{quote(p)}: the file is empty. Re-export the model.")
    try:
        model = onnx.ModelProto.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelError(
            f"'{p}': not an ONNX model (protobuf parse failed: {str(e).splitlines()[0][:80]}). "
            "The file is truncated or of another format; re-export or re-download it."
        ) from None
    if not model.HasField("graph") or not model.graph.node:
        raise ModelError(f"'{p}': the file parses but holds no ONNX graph. It is not an ONNX model or is truncated.")
    _check_external_data(model, p.parent.resolve(), p)
    _check_tensor_sizes(model, p)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in external_data_helper._get_all_tensors(model)):
        external_data_helper.load_external_data_for_model(model, str(p.parent))
    return model


def external_files(path: str | os.PathLike[str]) -> list[Path]:
    """The weight files a model keeps its tensors in (external data), for the outputs-are-never-inputs check.

    Only small graph files are parsed here (a model with external data is one); any failure gives []:
    reading the model properly reports it.
    """
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size > 1 << 26:
            return []
        model = onnx.load(str(p), load_external_data=False)
        return sorted({p.parent / e.value for t in external_data_helper._get_all_tensors(model)
                       if t.data_location == onnx.TensorProto.EXTERNAL for e in t.external_data
                       if e.key == "location" and e.value})
    except Exception:  # noqa: BLE001 - not a model at all: read_model says so later
        return []


def _check_external_data(model: onnx.ModelProto, base: Path, path: Path) -> None:
    total = 0
    for t in external_data_helper._get_all_tensors(model):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        try:
            target = (base / loc).resolve()
        except (OSError, RuntimeError):  # a symlink loop
            raise ModelError(f"{quote(path)}: tensor {quote(t.name)} keeps its data at {quote(loc)}, a symlink "
                             "loop. Copy the weight file next to the model.") from None
        if not loc or os.path.isabs(loc) or (target != base and base not in target.parents):
            raise ModelError(
                f"'{path}': tensor '{t.name}' keeps its data at '{loc}', outside the model's folder. "
                "Refused for safety; move the weight file next to the model and re-save it."
            )
        if not target.is_file():
            raise ModelError(
                f"'{path}': tensor '{t.name}' keeps its data in '{loc}', which does not exist. "
                "Copy the model's weight files next to it."
            )
        n = _num_elements(t, path)
        need = n * _ELEM_SIZE.get(t.data_type, 1)
        try:
            length = int(info.get("length", need))
            offset = int(info.get("offset", 0))
        except ValueError:
            length = offset = -1
        if length < 0 or offset < 0 or (t.data_type in _ELEM_SIZE and length != need):
            raise ModelError(f"{quote(path)}: tensor {quote(t.name)} declares external data at offset "
                             f"{quote(info.get('offset', 0))}, length {quote(info.get('length', need))}, but its "
                             f"shape {list(t.dims)} needs {need} bytes. The file is corrupt; re-export.")
        total += length
        if total > MAX_MODEL_BYTES:
            raise ModelError(f"{quote(path)}: its external weights exceed {MAX_MODEL_BYTES} bytes in all, more than a "
                             "model may have. Refused.")
        if offset + length > target.stat().st_size:
            raise ModelError(
                f"'{path}': tensor '{t.name}' needs {length} bytes at offset {offset} of '{loc}', "
                "but the file is shorter. The weight file is truncated; re-export."
            )


def _num_elements(t: onnx.TensorProto, path: Path) -> int:
    if any(d < 0 for d in t.dims):
        raise ModelError(f"'{path}': tensor '{t.name}' declares a negative dimension {list(t.dims)}. Re-export.")
    n = int(np.prod([int(d) for d in t.dims], dtype=object)) if t.dims else 1
    if n > MAX_TENSOR_ELEMENTS:
        raise ModelError(f"'{path}': tensor '{t.name}' declares shape {list(t.dims)} ({n} elements). Refused.")
    return n


def _check_tensor_sizes(model: onnx.ModelProto, path: Path) -> None:
    for t in external_data_helper._get_all_tensors(model):
        n = _num_elements(t, path)
        if t.data_location == onnx.TensorProto.EXTERNAL:
            continue
        if t.HasField("raw_data") or t.raw_data:
            size = _ELEM_SIZE.get(t.data_type)
            if size is not None and len(t.raw_data) != n * size:
                raise ModelError(
                    f"'{path}': tensor '{t.name}' declares shape {list(t.dims)} ({n * size} bytes) "
                    f"but holds {len(t.raw_data)} bytes. The file is corrupt; re-export."
                )
        else:
            held = max(len(t.float_data), len(t.int64_data), len(t.int32_data), len(t.double_data),
                       len(t.uint64_data), len(t.string_data))
            if held != n and not (held == 0 and n == 0):
                raise ModelError(
                    f"'{path}': tensor '{t.name}' declares shape {list(t.dims)} ({n} values) "
                    f"but holds {held}. The file is corrupt; re-export."
                )


def default_opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    raise ModelError("the model imports no default-domain opset; it is not a standard ONNX graph.")


def normalize_opset(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise ModelError(f"'{where}': opset {opset} is older than {MIN_OPSET}. Re-export with opset 11 or newer.")
    if opset >= WORKING_OPSET:
        return model
    try:
        return version_converter.convert_version(model, WORKING_OPSET)
    except Exception as e:  # noqa: BLE001 - the converter raises bare RuntimeErrors with C++ text
        if opset >= 13:
            return model  # ops we handle have had stable signatures since opset 13
        raise ModelError(
            f"'{where}': cannot upgrade opset {opset} to {WORKING_OPSET} ({str(e).splitlines()[0][:100]}). "
            "Re-export with opset 13 or newer."
        ) from None


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - shape inference is best effort
        try:
            return shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001
            return model  # shapes are probed with onnxruntime later anyway


def _check_generated_sizes(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Refuse nodes that make a huge tensor from small constants (Range(0, 1e12), ConstantOfShape or Expand
    to 1e10 elements) before shape inference, which would materialize them, or onnxruntime runs them."""
    consts: dict[str, np.ndarray] = {}
    for t in model.graph.initializer:
        if t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.FLOAT,
                           onnx.TensorProto.DOUBLE) and _num_elements(t, Path(path)) <= 64:
            consts[t.name] = numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and len(n.output) == 1:
            for a in n.attribute:
                if a.name == "value" and a.t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32,
                                                           onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE) \
                        and _num_elements(a.t, Path(path)) <= 64:
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    for n in model.graph.node:
        ins = [consts.get(i) if i else None for i in n.input]
        count = None
        with np.errstate(all="ignore"):
            if n.op_type == "Range" and len(ins) == 3 and all(v is not None and v.size == 1 for v in ins):
                start, limit, delta = (float(v.reshape(-1)[0]) for v in ins)
                count = float("inf") if delta == 0 or not np.isfinite([start, limit, delta]).all() \
                    else max(np.ceil((limit - start) / delta), 0)
            elif n.op_type == "ConstantOfShape" and ins and ins[0] is not None:
                count = float(np.prod([max(float(d), 1.0) for d in ins[0].reshape(-1)]))
            elif n.op_type == "Expand" and len(ins) == 2 and ins[1] is not None:
                count = float(np.prod([max(float(d), 1.0) for d in ins[1].reshape(-1)]))
        if count is not None and count > MAX_GENERATED_ELEMENTS:
            raise ModelError(f"{quote(path)}: node {quote(n.name or n.output[0])} ({n.op_type}) makes "
                             f"{count:.3g} elements from constants, more than {MAX_GENERATED_ELEMENTS}. Refused.")


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Read, validate, normalize the opset and infer shapes."""
    model = read_model(path)
    _check_generated_sizes(model, path)
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - ValidationError, or a C++ message that is not even valid UTF-8
        first = (str(e).strip().splitlines() or ["unknown problem"])[0][:160]
        raise ModelError(f"'{path}': not a valid ONNX model ({first}). Re-export it.") from None
    model = normalize_opset(model, str(path))
    return infer_shapes(model)
