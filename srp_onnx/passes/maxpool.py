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
        ctx.note(f"replaced {node.name} by {node.op} (--maxpool avg): the network changed; compare its ANN accuracy")
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
        chain = [n for n in graph.nodes if n.name in set(site.nodes)]
        if {n.name for n in consumers.get(site.input, [])} - set(site.nodes):
            continue  # the pooled tensor has other readers: they need it as it is
        x, pooled = pool.inputs[0], pool.outputs[0]
        moved = graph.fresh_name(f"{site.output}__before_pool")
        for n in chain:
            n.inputs = [x if i == pooled else i for i in n.inputs]
            n.outputs = [moved if o == site.output else o for o in n.outputs]
        pool.inputs[0], pool.outputs[0] = moved, site.output
        ctx.note(f"moved activation {site.output} before {pool.name} (MaxPool): a non-decreasing activation "
                 "commutes with max, so the ANN is the same and --maxpool gate applies")
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
    Unlike averaging, it keeps the network. Returns the names of the nodes it wrote, which
    ``check_linear`` accepts.
    """
    import numpy as np

    from srp_onnx.graph import Node

    _move_activations_before_pools(graph, sites, ctx)
    by_output = {s.output: s for s in sites}
    written: set[str] = set()
    for node in list(graph.walk(("MaxPool",))):
        site = by_output.get(node.inputs[0])
        if site is None or (len(node.outputs) > 1 and node.outputs[1]):
            continue
        base = node.name
        keep = {k: v for k, v in node.attrs.items()
                if k in ("kernel_shape", "strides", "pads", "ceil_mode", "auto_pad", "dilations")}
        idx, flat = graph.fresh_name(f"{base}__gate_idx"), graph.fresh_name(f"{base}__gate_flat")
        shape = graph.add_const(f"{base}__gate_shape", np.array([-1], dtype=np.int64))
        new = [
            Node("MaxPool", [site.input], [graph.fresh_name(f"{base}__gate_max"), idx], keep,
                 name=f"{base}__gate_argmax"),
            Node("Reshape", [site.output, shape], [flat], name=f"{base}__gate_flatten"),
            Node("Gather", [flat, idx], [node.outputs[0]], {"axis": 0}, name=f"{base}__gate_select"),
        ]
        i = graph.nodes.index(node)
        graph.nodes[i:i + 1] = new
        written.update(n.name for n in new)
        ctx.note(f"replaced {base} (MaxPool) by a spiking max-pool gate (--maxpool gate): each window passes the "
                 "spikes of the neuron with the largest input current")
    graph.toposort()
    return written
