"""Pictures of the graph that backward walks, as Graphviz DOT text.

    import tensorlite.viz
    logits, loss = model(x, y)
    open("graph.dot", "w").write(tensorlite.viz.to_dot(loss, model))
    # then: dot -Tsvg graph.dot -o graph.svg

One node per op (its Function class and output shape), one per leaf tensor (a parameter's
name, or "input (shape)"), and edges in the direction data flows: input -> op -> op.
Only Tensors passed positionally are graph inputs: token ids, targets and masks travel as
keyword arguments and have no node. Backward frees what each op saved but keeps its
`.inputs`, so the graph can be drawn before or after loss.backward().
"""
from .nn import Module

OP_STYLE = 'shape=box, style="rounded,filled", fillcolor="#dbe9f6"'
PARAM_STYLE = 'shape=box, style=filled, fillcolor="#fdf1c7"'
INPUT_STYLE = 'shape=ellipse, style=filled, fillcolor="#eeeeee"'


def to_dot(tensor, param_names=None):
    """DOT text of the graph that made `tensor`.

    param_names names the leaves: a Module (names from named_parameters()) or a dict
    {id(param): name}. A tensor's own `.name`, when set, comes first.
    """
    names = _leaf_names(param_names)
    nodes = {}   # id(Function or leaf Tensor) -> DOT node id, in the order first seen
    lines, edges = [], []

    def node_of(t, extra=""):
        """The node that produced t (its creator's op node, or t's own leaf node); new or not."""
        key = id(t.creator) if t.creator is not None else id(t)
        if key in nodes:
            return nodes[key], False
        nodes[key] = f"n{len(nodes)}"
        name = t.name or names.get(id(t))
        if t.creator is not None:
            label, style = [type(t.creator).__name__, _shape(t)], OP_STYLE
        elif name:  # a parameter
            label, style = [name, _shape(t)], PARAM_STYLE
        else:
            label, style = [f"input {_shape(t)}"], INPUT_STYLE
        lines.append(f'  {nodes[key]} [label="{_label(label)}", {style}{extra}];')
        return nodes[key], True

    node_of(tensor, extra=", penwidth=2")  # the root (the loss) with a bold border
    stack = [tensor]  # a stack, not recursion: a deep graph must not hit the recursion limit
    while stack:
        fn = stack.pop().creator
        if fn is None:
            continue
        out = nodes[id(fn)]
        for x in fn.inputs:
            src, new = node_of(x)
            edges.append(f"  {src} -> {out};")  # an input used twice gives two edges
            if new:
                stack.append(x)
    return "\n".join(["digraph tensorlite {", '  node [fontname="Helvetica", fontsize=10];',
                      '  edge [color="#555555", arrowsize=0.6];', *lines, *edges, "}"]) + "\n"


def _leaf_names(param_names):
    if param_names is None:
        return {}
    if isinstance(param_names, Module):
        return {id(p): name for name, p in param_names.named_parameters()}
    if isinstance(param_names, dict):
        return param_names
    raise TypeError(f"param_names must be a Module or a dict {{id(param): name}}, "
                    f"got {type(param_names).__name__}")


def _shape(t):
    return str(tuple(int(n) for n in t.shape))  # (2, 8, 65), (16,), () as Python writes them


def _label(parts):
    """One DOT string from lines of text: quotes and backslashes escaped, lines joined by \\n."""
    return "\\n".join(p.replace("\\", "\\\\").replace('"', '\\"') for p in parts)
