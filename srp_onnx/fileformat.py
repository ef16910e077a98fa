"""The saved spiking model, as a contract: what ``convert`` writes and every reader checks.

A spiking file is an ONNX model (IR version :data:`IR_VERSION`) whose graph is one
time step of the SNN:

* inputs: the network input, and per neuron layer its membrane ``v`` and SRP ``mask``;
* outputs: the step's logits (first), and per neuron layer its next membrane ``v_next``;
* every neuron layer is one ``srp.IF`` node (neuron.py), a call of the model-local
  function of that name; the node's inputs ``(x, v, mask, theta)`` and outputs
  ``(y, v_next)`` name the layer's tensors;
* ``metadata_props`` (keys below, prefix ``srp_onnx.``): ``format_version``,
  ``version`` (of srp-onnx), ``tau`` (default pre-simulation length), ``method``
  (JSON ``{"rule": ..., "c": ...}``: the neuron rule applied at the end of the
  pre-simulation, neuron.Method; absent means SRP), ``layers
  (JSON list of layer records: sites.Site), ``input``, ``logits``, ``source``,
  ``source_sha256``, ``notes`` (JSON list of notes.Note), plus what the source model
  carried (``preprocessing``, ``dataset``, ... from ``srp-onnx train``).

A layer record's ``output`` is its IF node's first output: that is how a record and its
node find each other. :func:`read` checks all of this and returns a :class:`SpikingFile`;
a file of another format version is refused in one line that says to convert again.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import onnx

from srp_onnx.errors import ModelError, quote, safe
from srp_onnx.neuron import MAX_TAU, SRP, Method, NeuronState, is_neuron
from srp_onnx.notes import Note
from srp_onnx.sites import Site

FORMAT_VERSION = 2  # 1: srp-onnx 0.1.0 (neurons as loose nodes found by their names)
IR_VERSION = 10  # onnxruntime 1.31 reads at most 13; onnx 1.23 writes 14 unless told
META = "srp_onnx."


class Key:
    """Metadata keys of a spiking file (with the ``srp_onnx.`` prefix)."""

    FORMAT_VERSION = f"{META}format_version"
    VERSION = f"{META}version"
    TAU = f"{META}tau"
    METHOD = f"{META}method"
    LAYERS = f"{META}layers"
    INPUT = f"{META}input"
    LOGITS = f"{META}logits"
    SOURCE = f"{META}source"
    SOURCE_SHA256 = f"{META}source_sha256"
    NOTES = f"{META}notes"


@dataclasses.dataclass
class Layer:
    """A neuron layer as the file holds it: its record and the state tensors its IF node names."""

    site: Site
    state: NeuronState


@dataclasses.dataclass
class SpikingFile:
    layers: list[Layer]
    tau: int
    method: Method
    input: str
    logits: str
    notes: list[Note]
    metadata: dict[str, str]

    @property
    def sites(self) -> list[Site]:
        return [layer.site for layer in self.layers]


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {m.key: m.value for m in model.metadata_props}


def is_spiking(model: onnx.ModelProto) -> bool:
    """Whether ``model`` was written by ``convert`` (any format version)."""
    return any(m.key in (Key.LAYERS, Key.FORMAT_VERSION) for m in model.metadata_props)


def describe(meta: dict[str, str]) -> dict[str, Any]:
    """Provenance for people (``inspect``): version, source, its sha256."""
    return {"version": meta.get(Key.VERSION, "?"), "source": meta.get(Key.SOURCE, "?"),
            "source_sha256": meta.get(Key.SOURCE_SHA256, "?"), "tau": meta.get(Key.TAU, "?")}


def file_metadata(*, version: str, tau: int, sites: list[Site], input: str, logits: str, source: str,
                  source_sha256: str, notes: list[Note], method: Method = SRP) -> dict[str, str]:
    """The ``srp_onnx.*`` entries of a file being written."""
    from srp_onnx.sites import sites_to_json

    return {
        Key.FORMAT_VERSION: str(FORMAT_VERSION),
        Key.VERSION: version,
        Key.TAU: str(check_tau(tau)),
        Key.METHOD: json.dumps(method.to_json()),
        Key.LAYERS: sites_to_json(sites),
        Key.INPUT: input,
        Key.LOGITS: logits,
        Key.SOURCE_SHA256: source_sha256,
        Key.SOURCE: source,
        Key.NOTES: json.dumps([n.to_json() for n in notes]),
    }


def check_tau(tau: int, what: str = "the pre-simulation length tau") -> int:
    if isinstance(tau, bool) or not isinstance(tau, int) or not 0 <= tau <= MAX_TAU:
        raise ModelError(f"{what} = {safe(tau)!s:.40}: must be a whole number from 0 to {MAX_TAU}.")
    return tau


def set_default_tau(model: onnx.ModelProto, tau: int) -> None:
    for m in model.metadata_props:
        if m.key == Key.TAU:
            m.value = str(check_tau(tau))


def set_method(model: onnx.ModelProto, method: Method) -> None:
    """Record ``method`` as the model's neuron rule (``auto`` chose it after conversion)."""
    for m in model.metadata_props:
        if m.key == Key.METHOD:
            m.value = json.dumps(method.to_json())
            return
    model.metadata_props.add(key=Key.METHOD, value=json.dumps(method.to_json()))


def _json(meta: dict[str, str], key: str, where: str) -> Any:
    try:
        return json.loads(meta[key])
    except KeyError:
        raise ModelError(f"{where}: its srp_onnx metadata lacks '{key}'; the file is damaged. Convert the ANN "
                         "again.") from None
    except (ValueError, RecursionError):
        raise ModelError(f"{where}: metadata '{key}' is not valid JSON; the file is damaged. Convert the ANN "
                         "again.") from None


def read(model: onnx.ModelProto, where: str = "the model") -> SpikingFile:
    """The checked contents of a spiking file (ModelError naming what is wrong otherwise)."""
    from srp_onnx.sites import sites_from_json

    meta = metadata(model)
    if not is_spiking(model):
        raise ModelError(f"{where} has no srp_onnx metadata: it is not a converted spiking model. Convert it "
                         "first.")
    version = meta.get(Key.FORMAT_VERSION, "1")
    if version != str(FORMAT_VERSION):
        by = meta.get(Key.VERSION, "an earlier version")
        raise ModelError(f"{where} was written by srp-onnx {safe(by[:20])} in file format {safe(version[:10])}; this "
                         "version "
                         f"reads format {FORMAT_VERSION}. Convert the ANN again with this version.")
    text = meta.get(Key.TAU, "0")
    if not (text.isascii() and text.isdigit() and len(text) <= 6):
        raise ModelError(f"{where}: metadata '{Key.TAU}' is {quote(text[:40])}, not a whole number from 0 to "
                         f"{MAX_TAU}; the file is damaged. Convert the ANN again.")
    tau = check_tau(int(text), f"{where}: its default tau")
    if Key.LAYERS not in meta:
        raise ModelError(f"{where}: its srp_onnx metadata lacks '{Key.LAYERS}'; the file is damaged. Convert the "
                         "ANN again.")
    try:
        sites = sites_from_json(meta[Key.LAYERS])
    except ModelError as e:
        raise ModelError(f"{where}: {e}") from None
    try:
        if len(meta.get(Key.NOTES, "")) > 1 << 20:
            raise ValueError("too long")
        notes = [Note.from_json(d) for d in _json(meta, Key.NOTES, where)]
    except (TypeError, ValueError):
        raise ModelError(f"{where}: metadata '{Key.NOTES}' is malformed; the file is damaged. Convert the ANN "
                         "again.") from None
    names = {v.name for v in model.graph.input}, {v.name for v in model.graph.output}
    inp, logits = meta.get(Key.INPUT), meta.get(Key.LOGITS)
    if inp not in names[0] or logits not in names[1]:
        raise ModelError(f"{where}: the metadata names input {quote(inp)} and logits {quote(logits)}, which the "
                         "graph does not have; the file is damaged. Convert the ANN again.")
    nodes = {n.output[0]: n for n in model.graph.node if is_neuron(n) and len(n.output) == 2 and len(n.input) == 4}
    layers = []
    for s in sites:
        node = nodes.pop(s.output, None)
        if node is None or node.input[0] != s.input:
            raise ModelError(f"{where}: layer {quote(s.name)} has no IF node reading {quote(s.input)} and writing "
                             f"{quote(s.output)}; the file is damaged. Convert the ANN again.")
        state = NeuronState(node.input[1], node.input[2], node.output[1])
        if state.v not in names[0] or state.mask not in names[0] or state.v_next not in names[1]:
            raise ModelError(f"{where}: the state of layer {quote(s.name)} is not graph input/output; the file is "
                             "damaged. Convert the ANN again.")
        layers.append(Layer(s, state))
    if nodes:
        raise ModelError(f"{where}: {len(nodes)} IF node(s) have no layer record; the file is damaged. Convert "
                         "the ANN again.")
    text = meta.get(Key.METHOD)
    if text is not None and len(text) > 200:
        raise ModelError(f"{where}: metadata '{Key.METHOD}' is too long; the file is damaged. Convert the ANN again.")
    method = SRP if text is None else Method.from_json(text, where)
    return SpikingFile(layers, tau, method, inp, logits, notes, meta)
