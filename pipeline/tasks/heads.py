"""Head-aware INT8: find a detector's decode arithmetic so it stays in float, and only the head's.

A detector's last steps turn raw head outputs into boxes and scores: per-class sigmoid or softmax, box
math (offsets plus a cell grid, times a stride; exp of sizes), concatenation of heads. INT8 there costs
accuracy for nothing: the ops are cheap, and a score quantized to 1/255 steps or a box to a fraction of
the image loses the ranking and overlap that mAP measures. A global rule ("keep every Sigmoid in float")
would also keep every SiLU (x * sigmoid(x)) of the backbone in float, so the search here is scoped:

- it walks BACK from the graph outputs, through elementwise arithmetic, activations, layout and concat
  nodes only, and stops at any node with weights or a spatial window (Conv, Gemm, MatMul, pooling, ...);
- a node joins the head only when every consumer of its outputs is already in the head (or is a graph
  output), so nothing that also feeds the trunk is taken: a backbone SiLU feeds the next conv.

The result is a list of node names with the reason for each, the `fixed_exclusions` of the INT8 search.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCORE_OPS = ("Sigmoid", "Softmax", "LogSoftmax", "HardSigmoid")
BOX_OPS = ("Add", "Sub", "Mul", "Div", "Exp", "Log", "Pow", "Sqrt", "Neg", "Abs", "Clip", "Max", "Min", "Tanh",
           "Relu", "Floor", "Ceil", "Round")
JOIN_OPS = ("Concat", "Stack")
LAYOUT_OPS = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Split", "Gather", "Expand",
              "Tile", "Identity", "Cast")
# inputs that carry shapes or indices, not data: the walk does not follow them (no Shape/Range subgraphs)
DATA_INPUTS = {"Reshape": 1, "Expand": 1, "Tile": 1, "Slice": 1, "Gather": 1, "Squeeze": 1, "Unsqueeze": 1,
               "Split": 1, "Clip": 1}
SHAPE_READERS = ("Shape", "Size")
DECODE_OPS = frozenset(SCORE_OPS + BOX_OPS + JOIN_OPS + LAYOUT_OPS)


@dataclass(frozen=True)
class HeadNode:
    """One node of a head's decode arithmetic, kept in float by INT8.

    Attributes:
        name: the ONNX node name (what `nodes_to_exclude` takes).
        op_type: its operator.
        outputs: the graph outputs it feeds.
        why: the reason, for the report.
    """

    name: str
    op_type: str
    outputs: tuple[str, ...]
    why: str


def head_exclusions(model: Any, quantizable_only: bool = True) -> list[HeadNode]:
    """The decode-arithmetic nodes of the model's heads, in graph order.

    Args:
        model: an ONNX file path or `onnx.ModelProto`.
        quantizable_only: list only the op types ONNX Runtime's static quantizer would quantize (the others
            stay in float anyway); False lists every decode node found.
    Returns:
        HeadNode per node; empty for a model whose outputs come straight from a Conv/Gemm/MatMul (a plain
        classifier's logits).
    """
    import onnx

    m = onnx.load(str(model), load_external_data=False) if isinstance(model, (str, Path)) else model
    nodes = list(m.graph.node)
    graph_outputs = [o.name for o in m.graph.output]
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    consumers: dict[str, list[tuple[int, bool]]] = {}  # tensor -> (consumer, whether it reads it as data)
    for i, n in enumerate(nodes):
        if n.op_type in SHAPE_READERS:
            continue  # reads a tensor's shape, not its values: no reason to keep the tensor out of the head
        data = set(_followed_inputs(n))
        for inp in n.input:
            if inp:
                consumers.setdefault(inp, []).append((i, inp in data))
    reach: dict[int, set[str]] = {}  # head node -> graph outputs it feeds
    for out in graph_outputs:
        if out in producer:
            reach.setdefault(producer[out], set())
    # ONNX nodes are topologically sorted: reversed, every consumer is decided before its producer
    for i in sorted(range(len(nodes)), reverse=True):
        n = nodes[i]
        if n.op_type not in DECODE_OPS:
            reach.pop(i, None)
            continue
        feeds: set[str] = set()
        inside = True
        for out in n.output:
            if out in graph_outputs:
                feeds.add(out)
            for c, as_data in consumers.get(out, []):
                # feeding the trunk, or a shape/index input (shape arithmetic), is not head decode arithmetic
                if c not in reach or not as_data:
                    inside = False
                    break
                feeds |= reach[c]
            if not inside:
                break
        if inside and feeds:
            reach[i] = feeds
        else:
            reach.pop(i, None)
    keep = _quantizable_ops() if quantizable_only else None
    found = []
    for i in sorted(reach):
        n = nodes[i]
        if keep is not None and n.op_type not in keep:
            continue
        outs = tuple(o for o in graph_outputs if o in reach[i])
        found.append(HeadNode(n.name, n.op_type, outs, _why(n.op_type, outs)))
    return found


def head_exclusion_names(model: Any) -> list[str]:
    """Just the node names of `head_exclusions(model)` (unnamed nodes cannot be excluded and are left out).

    Args:
        model: an ONNX file path or `onnx.ModelProto`.
    Returns:
        Node names, in graph order.
    """
    return [h.name for h in head_exclusions(model) if h.name]


def as_records(nodes: list[HeadNode]) -> list[dict]:
    """JSON-able records of the exclusions, for manifests and reports."""
    return [dict(asdict(h), outputs=list(h.outputs)) for h in nodes]


def _followed_inputs(node: Any) -> list[str]:
    """The inputs the walk follows back: a layout op's shape/index inputs are not data."""
    k = DATA_INPUTS.get(node.op_type)
    ins = list(node.input[:k]) if k is not None else list(node.input)
    return [i for i in ins if i]


def _why(op: str, outs: tuple[str, ...]) -> str:
    target = ", ".join(repr(o) for o in outs)
    if op in SCORE_OPS:
        return (f"head activation ({op}) feeding output {target}: scores/offsets in INT8 steps of 1/255 "
                "lose their ranking")
    if op in JOIN_OPS:
        return f"concat of head tensors ({op}) feeding output {target}: one INT8 scale would span them all"
    if op in BOX_OPS:
        return f"decode math ({op}) feeding output {target}: pixel-scale boxes lose precision in INT8"
    return f"layout ({op}) between the head's decode and output {target}"


def _quantizable_ops() -> frozenset[str]:
    """The op types ONNX Runtime's quantize_static quantizes by default (QLinear and QDQ registries)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return frozenset(QLinearOpsRegistry) | frozenset(QDQRegistry)
