"""Drop classifier heads after the last linear layer; keep the logits.

The SNN accumulates logits over time; a Softmax of each step's output would
not sum to the rate-coded value. From every graph output we walk upstream:
1. through head ops (Softmax, LogSoftmax, ArgMax, ZipMap, ArrayFeatureExtractor,
   TopK, ...);
2. and, only downstream of such a head op, through reshaping or casting ops
   (Cast, Reshape, Flatten, Squeeze, Unsqueeze, Identity) that exporters add to
   labels and probabilities.
The tensor feeding the most upstream head op of each output is that
output's logits; all outputs must agree on one tensor, which becomes the
graph's only output. An output with no head op is its own logits.
3. Upstream of the most upstream head op, a reshaping op that keeps the
   shape (say, the Flatten(axis=1) of a [N, K] tensor that the opset 11 -> 13
   upgrade puts before a Softmax) is skipped too, so the logits keep the name
   the source graph gives them.
"""

from __future__ import annotations

from srp_onnx.errors import ModelError
from srp_onnx.graph import Graph, ValueInfo
from srp_onnx.notes import NoteKind
from srp_onnx.passes import PassContext

HEAD_OPS = {"Softmax", "LogSoftmax", "ArgMax", "ArgMin", "ZipMap", "ArrayFeatureExtractor", "TopK", "Hardmax"}
PASS_OPS = {"Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}


def find_logits(graph: Graph, output: str) -> tuple[str, list[str]]:
    """Return (logits tensor, names of the head nodes passed) for one output."""
    producers = graph.producers()
    name, walked, logits, heads = output, [], output, []
    while name in producers and producers[name].op in HEAD_OPS | PASS_OPS:
        node = producers[name]
        walked.append(node)
        data = next((i for i in node.inputs if i and not graph.is_const(i)), None)
        if data is None:
            break
        if node.op in HEAD_OPS:
            logits = data
            heads = [n.name for n in walked]
        name = data
    if heads:  # case 3
        while logits in producers and producers[logits].op in PASS_OPS - {"Cast"}:
            node = producers[logits]
            data = node.inputs[0]
            if not data or graph.is_const(data) or not _same_shape(graph, data, logits):
                break
            heads.append(node.name or node.op)
            logits = data
    return logits, heads


def _same_shape(graph: Graph, a: str, b: str) -> bool:
    """Both shapes inferred, of one rank, equal in every dimension but the batch (which reshapes keep)."""
    sa, sb = graph.shapes.get(a), graph.shapes.get(b)
    if sa is None or sb is None or len(sa) != len(sb) or not sa:
        return False
    return all(isinstance(x, int) and x == y for x, y in zip(sa[1:], sb[1:]))


def strip_output_heads(graph: Graph, ctx: PassContext) -> bool:
    if not graph.outputs:
        raise ModelError("the graph declares no output. Re-export the model with its logits as output.")
    found = [(o, *find_logits(graph, o.name)) for o in graph.outputs]
    targets = {logits for _, logits, _ in found}
    if len(targets) > 1:
        raise ModelError(
            f"the graph has {len(graph.outputs)} outputs that lead to different tensors {sorted(targets)}; "
            "srp-onnx needs a classifier with one logits tensor. Export a single-output model."
        )
    (logits,) = targets
    if len(graph.outputs) == 1 and graph.outputs[0].name == logits:
        return False
    for out, _, heads in found:
        if heads:
            ctx.note(NoteKind.HEAD_DROPPED,
                     f"dropped output head {' <- '.join(heads)} of output '{out.name}'; accumulating '{logits}'")
        elif out.name != logits:
            ctx.note(NoteKind.OUTPUT_DROPPED, f"dropped output '{out.name}'")
    graph.outputs = [ValueInfo(logits, None)]
    graph.prune()
    return True
