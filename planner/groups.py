"""Fusion candidates, from the DAG's edges only.

In: a :class:`~extractor.dag.Dag`. Out: :class:`Stage` records (a DW or PW convolution with the
operators that fold into it) linked into chains, and :class:`Candidate` windows of 1-3 stages
along a chain whose sequence is an FCM kind (one stage: a pointwise conv with a channel scale,
the ``pw`` kind, which folds the scale's pass over its input); and :func:`lone_pointwise`, the
pointwise stages a chain's selection left, with an activation to fold.

A *stage* is one convolution plus what the FCM kernel does around it:
- prologue: an explicit zero ``pad`` before a depthwise conv (becomes its padding), or the
  per-channel scale of a squeeze-and-excitation block before a pointwise conv (``mul(x, s)``
  with ``s`` of shape [1, 1, 1, C]);
- epilogue: the activation (fused in the entry, or standalone operators: relu, relu6,
  hard_swish, logistic, and swish as ``logistic`` + ``mul``).

Stage A *links* to stage B when A's output feeds B and nothing else. A candidate may also take
a residual ``add`` after its last stage when the add's other operand is the candidate's own
input. Nothing crosses a branch and no operator is dropped: every operator between the first
stage's input and the candidate's output is absorbed into the candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from extractor.dag import Dag, Layer
from fcm_core import vocabulary

#: Stage-type sequences the FCM kernels implement, and their names (the op vocabulary's kinds).
KINDS: dict[tuple[str, ...], str] = {kind.stages: name for name, kind in vocabulary.KINDS.items()}
MAX_STAGES = vocabulary.MAX_STAGES
SINGLE_STAGE_KINDS = vocabulary.SINGLE_STAGE_KINDS  # a window only with a channel scale to fold (else lone_pointwise)

#: Activations the kernels' epilogue implements (the DAG's spellings), and the DAG operators that
#: apply one on their own.
SUPPORTED_ACTIVATIONS = frozenset(vocabulary.FROM_DAG_ACTIVATION)
STANDALONE_ACTIVATIONS = vocabulary.STANDALONE_ACTIVATIONS
DW_KERNELS = vocabulary.DW_KERNELS
DW_STRIDES = vocabulary.DW_STRIDES

Tensor = tuple  # ("op", layer id) or ("input", model input index)


@dataclass
class Stage:
    conv: int
    type: str  # "dw" | "pw"
    input: Tensor  # what the stage reads (before its prologue)
    output: int  # the entry whose output is the stage's output (its last epilogue op, or the conv)
    prologue: list[int] = field(default_factory=list)
    epilogue: list[int] = field(default_factory=list)
    activation: str = "0"
    pads: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # own padding + a folded pad entry
    se_scale: Tensor | None = None
    unsupported: str | None = None  # why the kernels cannot take this stage

    @property
    def entries(self) -> list[int]:
        return self.prologue + [self.conv] + self.epilogue

    @property
    def first_entry(self) -> int:
        return self.prologue[0] if self.prologue else self.conv


@dataclass
class Candidate:
    stages: list[Stage]
    kind: str
    residual_add: int | None = None
    residual_epilogue: list[int] = field(default_factory=list)
    final_activation: str = "0"  # after the residual add

    @property
    def input(self) -> Tensor:
        return self.stages[0].input

    @property
    def output(self) -> int:
        if self.residual_add is not None:
            return (self.residual_epilogue or [self.residual_add])[-1]
        return self.stages[-1].output

    @property
    def convs(self) -> list[int]:
        return [s.conv for s in self.stages]

    @property
    def entries(self) -> list[int]:
        """Every DAG entry the fused node replaces."""
        ids = [i for s in self.stages for i in s.entries]
        if self.residual_add is not None:
            ids += [self.residual_add] + self.residual_epilogue
        return sorted(ids)


class Graph:
    """Consumers and model outputs of a DAG, for walking its edges."""

    def __init__(self, dag: Dag):
        self.dag = dag
        self.consumers: dict[int, list[int]] = {layer.id: list(layer.children) for layer in dag}
        self.is_output = {layer.id for layer in dag for out in layer.outputs or [] if out.get("model_output") is not None}
        if not any(layer.outputs for layer in dag):  # seed files: the entries nobody consumes
            self.is_output = {layer.id for layer in dag if not layer.children}

    def sole_consumer(self, layer_id: int) -> int | None:
        consumers = self.consumers[layer_id]
        if len(consumers) == 1 and layer_id not in self.is_output:
            return consumers[0]
        return None

    def data_inputs(self, layer: Layer) -> list[Tensor]:
        """The computed operands of an entry, in order (from ``inputs``, or ``parents`` for seed files)."""
        if layer.inputs is None:
            return [("op", p) for p in layer.parents] or [("input", 0)]
        found = []
        for operand in layer.inputs:
            if operand is None or "const" in operand:
                continue
            found.append(("op", operand["op"]) if "op" in operand else ("input", operand["graph_input"]))
        return found


def _activation_of(layer: Layer) -> str:
    return layer.activation if layer.activation not in (None, "NONE") else "0"


def _shape4(operand_shape) -> list[int] | None:
    return list(operand_shape) if operand_shape and len(operand_shape) == 4 else None


def build_stage(graph: Graph, conv: Layer) -> Stage:
    dag = graph.dag
    inputs = graph.data_inputs(conv)
    stage = Stage(conv=conv.id, type=conv.type, input=inputs[0] if inputs else ("input", 0), output=conv.id,
                  activation=_activation_of(conv), pads=list(conv.pads or [0, 0, 0, 0]))

    # prologue: explicit zero padding before a depthwise conv
    producer = dag[stage.input[1]] if stage.input[0] == "op" else None
    if producer is not None and graph.sole_consumer(producer.id) == conv.id:
        if conv.type == "dw" and producer.name == "pad" and producer.padding_top is not None and _pads_only_spatial(dag, producer):
            stage.prologue = [producer.id]
            stage.pads = [stage.pads[0] + producer.padding_top, stage.pads[1] + producer.padding_bottom,
                          stage.pads[2] + producer.padding_left, stage.pads[3] + producer.padding_right]
            stage.input = graph.data_inputs(producer)[0]
        elif conv.type == "pw" and producer.name == "mul" and not producer.opaque and _activation_of(producer) == "0":
            scale = _se_scale(graph, producer)
            if scale is not None:
                stage.prologue = [producer.id]
                stage.input, stage.se_scale = scale

    # epilogue: activations that follow, one consumer at a time
    out = conv.id
    while True:
        nxt = graph.sole_consumer(out)
        if nxt is not None and dag[nxt].name in STANDALONE_ACTIVATIONS and not dag[nxt].opaque and stage.activation == "0":
            stage.activation = STANDALONE_ACTIVATIONS[dag[nxt].name]
            stage.epilogue.append(nxt)
            out = nxt
            continue
        swish = _swish_after(graph, out)
        if swish is not None and stage.activation == "0":
            stage.activation = "SWISH"
            stage.epilogue += list(swish)
            out = swish[1]
            continue
        break
    stage.output = out
    stage.unsupported = _unsupported(conv, stage)
    return stage


def _pads_only_spatial(dag: Dag, pad: Layer) -> bool:
    key = f"{pad.id}/input1"
    if key in dag.weights:
        paddings = dag.weights[key].reshape(-1, 2)
        return paddings.shape[0] == 4 and not paddings[0].any() and not paddings[3].any()
    return True  # seed files: pad entries only ever pad H and W


def _se_scale(graph: Graph, mul: Layer) -> tuple[Tensor, Tensor] | None:
    """(feature map, per-channel scale) if ``mul`` scales a feature map by [1, 1, 1, C]."""
    operands = [o for o in mul.inputs or [] if o is not None and "const" not in o]
    if len(operands) != 2:
        return None
    shapes = [_shape4(o.get("shape")) for o in operands]
    if None in shapes:
        return None
    refs = graph.data_inputs(mul)
    for fm, sc in ((0, 1), (1, 0)):
        if shapes[sc][:3] == [1, 1, 1] and shapes[fm][3] == shapes[sc][3] and shapes[fm][1] * shapes[fm][2] > 1:
            return refs[fm], refs[sc]
    return None


def _swish_after(graph: Graph, layer_id: int) -> tuple[int, int] | None:
    """(logistic, mul) if the output of ``layer_id`` goes exactly to x * sigmoid(x)."""
    dag = graph.dag
    consumers = graph.consumers[layer_id]
    if layer_id in graph.is_output or len(consumers) != 2:
        return None
    kinds = {dag[c].name: c for c in consumers}
    if set(kinds) != {"logistic", "mul"}:
        return None
    sigmoid, mul = kinds["logistic"], kinds["mul"]
    if graph.sole_consumer(sigmoid) != mul or dag[mul].opaque or _activation_of(dag[mul]) != "0":
        return None
    if sorted(graph.data_inputs(dag[mul])) != sorted([("op", layer_id), ("op", sigmoid)]):
        return None
    return sigmoid, mul


def _unsupported(conv: Layer, stage: Stage) -> str | None:
    if conv.opaque:
        return "opaque operator"
    if stage.activation not in SUPPORTED_ACTIVATIONS:
        return f"activation {stage.activation} is not implemented by the fused kernels"
    stride = conv.strides_hw or [conv.strides or 1] * 2
    if conv.dilation and list(conv.dilation) != [1, 1]:
        return f"dilation {conv.dilation}"
    if conv.groups not in (None, 1):
        return f"grouped convolution ({conv.groups} groups)"
    if conv.type == "dw":
        kernel = conv.kernel_size or conv.weights_shape[1:]
        if kernel[0] != kernel[1] or kernel[0] not in DW_KERNELS:
            return f"depthwise kernel {kernel} (the kernels take {'/'.join(map(str, DW_KERNELS))}, square)"
        if stride[0] != stride[1] or stride[0] not in DW_STRIDES:
            return f"depthwise stride {stride}"
        if (conv.depth_multiplier or 1) != 1:
            return f"depth multiplier {conv.depth_multiplier}"
    elif conv.type == "pw":
        if list(stride) != [1, 1]:
            return f"pointwise stride {stride}"
    if conv.type == "dw" and max(stage.pads) >= _kernel(conv):
        return f"padding {stage.pads} as wide as the {_kernel(conv)}x{_kernel(conv)} kernel"
    return None


def _kernel(conv: Layer) -> int:
    if conv.kernel_size:
        return conv.kernel_size[0]
    return conv.weights_shape[1] if conv.type == "dw" else 1


# --- chains and windows -------------------------------------------------------------------------

def build_stages(dag: Dag) -> tuple[Graph, dict[int, Stage]]:
    graph = Graph(dag)
    stages = {layer.id: build_stage(graph, layer) for layer in dag if layer.type in ("dw", "pw")}
    return graph, stages


def link(graph: Graph, stages: dict[int, Stage]) -> dict[int, int]:
    """conv id -> conv id of the stage its output feeds, and nothing else."""
    by_first_entry = {stage.first_entry: stage for stage in stages.values()}
    links = {}
    for stage in stages.values():
        nxt = graph.sole_consumer(stage.output)
        if nxt is None or nxt not in by_first_entry:
            continue
        target = by_first_entry[nxt]
        if target.se_scale is None and target.input == ("op", stage.output):
            links[stage.conv] = target.conv
    return links


def chains(stages: dict[int, Stage], links: dict[int, int]) -> list[list[int]]:
    """Maximal paths of linked stages (conv ids, in order); every stage is on exactly one."""
    has_predecessor = set(links.values())
    result = []
    for conv in sorted(stages):
        if conv in has_predecessor:
            continue
        path = [conv]
        while path[-1] in links:
            path.append(links[path[-1]])
        result.append(path)
    return result


def windows(graph: Graph, stages: dict[int, Stage], chain: list[int]) -> list[tuple[int, Candidate | str]]:
    """(start index, candidate or the reason it cannot be fused) for every window of the chain
    whose stage types form an FCM kind."""
    found = []
    for start in range(len(chain)):
        for length in range(1, MAX_STAGES + 1):
            if start + length > len(chain):
                break
            members = [stages[c] for c in chain[start : start + length]]
            kind = KINDS.get(tuple(s.type for s in members))
            if kind is None or (kind in SINGLE_STAGE_KINDS and members[0].se_scale is None):
                continue
            reasons = [f"layer {s.conv}: {s.unsupported}" for s in members if s.unsupported]
            if reasons:
                found.append((start, "; ".join(reasons)))
                continue
            candidate = Candidate(members, kind)
            _attach_residual(graph, candidate)
            found.append((start, candidate))
    return found


def lone_pointwise(graph: Graph, stages: dict[int, Stage], chain: list[int], held: set[int],
                   fused_by_library: tuple[str, ...]) -> list[Candidate]:
    """One-stage candidates for the pointwise stages of ``chain`` that no group in ``held`` takes and
    whose activation a library convolution would leave to a pass of its own (not in
    ``fused_by_library``): a network's head convolution, whose ReLU6 or swish then runs in the
    epilogue. Not at one pixel per image (a squeeze-and-excitation branch's product, which the
    block kernels would run one 64-row tile per pixel). (A stage with a channel scale is a window
    of :func:`windows` already.)"""
    found = []
    for conv in chain:
        stage = stages[conv]
        if conv in held or stage.type != "pw" or stage.unsupported or stage.se_scale is not None:
            continue
        out_shape = graph.dag[conv].ofms_shape
        if stage.activation in ("0", *fused_by_library) or (out_shape and out_shape[1] * out_shape[2] == 1):
            continue
        candidate = Candidate([stage], KINDS[("pw",)])
        _attach_residual(graph, candidate)
        found.append(candidate)
    return found


def _attach_residual(graph: Graph, candidate: Candidate) -> None:
    """Take a following ``add`` whose other operand is the candidate's input (and the
    activations after it)."""
    dag = graph.dag
    add_id = graph.sole_consumer(candidate.stages[-1].output)
    if add_id is None:
        return
    add = dag[add_id]
    if add.name != "add" or add.opaque:
        return
    operands = graph.data_inputs(add)
    if len(operands) != 2 or sorted(operands) != sorted([("op", candidate.stages[-1].output), candidate.input]):
        return
    shapes = [o.get("shape") for o in add.inputs or [] if o is not None and "const" not in o]
    if len(shapes) == 2 and shapes[0] != shapes[1]:
        return  # a broadcasting add is not a residual
    activation = _activation_of(add)
    epilogue = []
    out = add_id
    nxt = graph.sole_consumer(out)
    if nxt is not None and dag[nxt].name in STANDALONE_ACTIVATIONS and activation == "0" and not dag[nxt].opaque:
        activation = STANDALONE_ACTIVATIONS[dag[nxt].name]
        epilogue.append(nxt)
    if activation not in SUPPORTED_ACTIVATIONS:
        return
    candidate.residual_add = add_id
    candidate.residual_epilogue = epilogue
    candidate.final_activation = activation
