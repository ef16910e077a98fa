"""Max pooling has no rate-equivalent on spike trains.

1. ``--maxpool error`` (default): left in place; the site finder refuses it
   with an explanation.
2. ``--maxpool avg``: MaxPool -> AveragePool with the same kernel, strides,
   pads and ceil_mode (count_include_pad=1, as torch's AvgPool2d), and
   GlobalMaxPool -> GlobalAveragePool. This changes the network; the user is
   told, and eval reports the ANN accuracy after the swap.
"""

from __future__ import annotations

from srp_onnx.graph import Graph
from srp_onnx.notes import NoteKind
from srp_onnx.passes import PassContext


def replace_maxpool(graph: Graph, ctx: PassContext) -> bool:
    if ctx.maxpool != "avg":
        return False
    changed = False
    for node in graph.walk(("MaxPool", "GlobalMaxPool")):
        if node.op == "GlobalMaxPool":
            node.op = "GlobalAveragePool"
        else:
            kept = ("kernel_shape", "strides", "pads", "ceil_mode", "auto_pad")
            keep = {k: v for k, v in node.attrs.items() if k in kept}
            keep["count_include_pad"] = 1
            node.op, node.attrs = "AveragePool", keep
            node.outputs = node.outputs[:1]
        ctx.note(NoteKind.MAXPOOL_TO_AVGPOOL,
                 f"replaced {node.name} by {node.op} (as asked): the network changed; compare its ANN accuracy")
        changed = True
    return changed


def _move_activations_before_pools(graph: Graph, sites: list, ctx: PassContext) -> None:
    """``y = act(MaxPool(x))`` -> ``y = MaxPool(act(x))``, so that the gate applies.

    Every activation here (ReLU, Clip(0, c), the QCFS staircase) is non-decreasing, so it
    commutes with a max (padding included: MaxPool ignores padded cells); the ANN is unchanged.
    The neuron layer then sits before the pool, one neuron per pre-pool element.
    """
    producers = graph.producers()
    consumers = graph.consumers()
    for site in sites:
        pool = producers.get(site.input)
        if pool is None or pool.op != "MaxPool" or (len(pool.outputs) > 1 and pool.outputs[1]):
            continue
        in_chain = set(site.nodes)
        chain = [n for n in graph.nodes if n.name in in_chain]
        if {n.name for n in consumers.get(site.input, [])} - in_chain:
            continue  # the pooled tensor has other readers: they need it as it is
        x, pooled = pool.inputs[0], pool.outputs[0]
        moved = graph.fresh_name(f"{site.output}__before_pool")
        for n in chain:
            n.inputs = [x if i == pooled else i for i in n.inputs]
            n.outputs = [moved if o == site.output else o for o in n.outputs]
        pool.inputs[0], pool.outputs[0] = moved, site.output
        ctx.note(NoteKind.ACTIVATION_MOVED,
                 f"moved activation {site.output} before {pool.name} (MaxPool): a non-decreasing activation "
                 "commutes with max, so the ANN is the same and the max-pool gate applies")
        site.name, site.input, site.output = moved, x, moved
    graph.toposort()


def gate_maxpool(graph: Graph, sites: list, ctx: PassContext) -> set[str]:
    """``--maxpool gate``: a spiking max pool that passes the spikes of one neuron per window.

    Max pooling right after a neuron layer (y = act(x)) is rewritten as
        idx = argmax over each window of the layer's input current x   (MaxPool's Indices)
        out = y.flatten()[idx]                                         (Reshape + Gather)
    The activations are non-decreasing, so in the ANN act(x[argmax x]) = max act(x): the
    rewrite is exact there. In the SNN each window forwards the spike train of the neuron
    whose input current is largest at this step (exactly the ANN's winner when that current
    is constant over time, as for a first layer; an approximation deeper in the network).
    Unlike averaging, it keeps the network.

    The current that ranks a tensor's elements (its *proxy*) follows the tensor through
    1. zero padding (Keras' ZeroPadding2D before a pool): the proxy is padded with -inf,
       since act(-inf) = 0 is the padded value and a pad never outranks a real element;
    2. Concat of neuron layers with the same activation (SqueezeNet's fire modules): the
       proxies are concatenated the same way;
    3. a gated pool (GoogLeNet's pool after pool): its proxy is the window's largest current.
    Returns the names of the nodes it wrote, which ``check_linear`` accepts.
    """
    import numpy as np

    from srp_onnx.graph import Node

    _move_activations_before_pools(graph, sites, ctx)
    proxy = {s.output: s.input for s in sites}  # tensor -> the current that orders its elements
    act = {s.output: (s.kind, None if s.kind == "relu" else s.theta) for s in sites}
    written: set[str] = set()
    for node in list(graph.nodes):  # in topological order: a tensor's proxy is known before its readers
        x = node.inputs[0] if node.inputs else None
        if node.op == "Pad" and x in proxy and _zero_constant_pad(graph, node):
            out = graph.fresh_name(f"{node.outputs[0]}__gate_current")
            low = graph.add_const(f"{node.name}__gate_low", np.array(-np.inf, np.float32))
            pads = node.inputs[1]
            extra = node.inputs[3:4]  # axes (opset 18), when given
            new = Node("Pad", [proxy[x], pads, low, *extra], [out], {"mode": "constant"},
                       name=f"{node.name}__gate_pad")
            graph.nodes.append(new)
            written.add(new.name)
            proxy[node.outputs[0]], act[node.outputs[0]] = out, act[x]
        elif node.op == "Concat" and node.inputs and all(i in proxy for i in node.inputs):
            if len({act[i] for i in node.inputs}) != 1:
                continue  # max over different activations has no single ranking current
            out = graph.fresh_name(f"{node.outputs[0]}__gate_current")
            new = Node("Concat", [proxy[i] for i in node.inputs], [out], dict(node.attrs),
                       name=f"{node.name}__gate_concat")
            graph.nodes.append(new)
            written.add(new.name)
            proxy[node.outputs[0]], act[node.outputs[0]] = out, act[node.inputs[0]]
        elif node.op == "MaxPool" and x in proxy and not (len(node.outputs) > 1 and node.outputs[1]):
            base = node.name
            keep = {k: v for k, v in node.attrs.items()
                    if k in ("kernel_shape", "strides", "pads", "ceil_mode", "auto_pad", "dilations")}
            idx, flat = graph.fresh_name(f"{base}__gate_idx"), graph.fresh_name(f"{base}__gate_flat")
            best = graph.fresh_name(f"{base}__gate_max")
            shape = graph.add_const(f"{base}__gate_shape", np.array([-1], dtype=np.int64))
            new = [
                Node("MaxPool", [proxy[x]], [best, idx], keep, name=f"{base}__gate_argmax"),
                Node("Reshape", [x, shape], [flat], name=f"{base}__gate_flatten"),
                Node("Gather", [flat, idx], [node.outputs[0]], {"axis": 0}, name=f"{base}__gate_select"),
            ]
            graph.nodes.remove(node)
            graph.nodes += new
            written.update(n.name for n in new)
            proxy[node.outputs[0]], act[node.outputs[0]] = best, act[x]
            ctx.note(NoteKind.MAXPOOL_GATED,
                     f"replaced {base} (MaxPool) by a spiking max-pool gate: each window passes "
                     "the spikes of the neuron with the largest input current")
    graph.toposort()
    graph.prune()
    return written


def _zero_constant_pad(graph: Graph, node) -> bool:
    """A constant-mode Pad whose value is 0 (the default)."""
    import numpy as np

    if node.attr("mode", "constant") not in ("constant", b"constant"):
        return False
    value = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    if value is None:
        return True
    return graph.is_const(value) and not np.any(graph.consts[value])
