"""tensorlite.viz.to_dot and the three picture scripts: draw_graph, attention_map, plot_loss.

The DOT text is read back with a small parser written here (no graphviz or pydot needed).
The PNG tests read the image back and check it holds a picture, not just that a file exists;
they skip, visibly, without matplotlib (the `viz` extra).
"""
import importlib.util
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import gpt
import gpt.train
import tensorlite as tl
import tensorlite.viz
from gpt import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("ROMEO:\nWhat say you, fair Juliet?\n\nJULIET:\nI say the night is young.\n\n"
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\n") * 20
NEEDS_MPL = "matplotlib (the viz extra) not installed"


def load_example(name):
    """Import examples/NAME.py as a module (the examples folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ==================================== reading DOT back =======================================

NODE = re.compile(r'^  (\w+) \[label="((?:[^"\\]|\\.)*)"(?:, [^\[\]]*)?\];$')
EDGE = re.compile(r"^  (\w+) -> (\w+);$")


def parse_dot(text):
    """{node id: label lines}, [(src, dst)]; fails on any line it does not understand."""
    lines = text.strip().splitlines()
    assert lines[0] == "digraph tensorlite {" and lines[-1] == "}", "not one digraph block"
    outside_quotes = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    assert outside_quotes.count("{") == outside_quotes.count("}") == 1, "braces do not balance"
    nodes, edges = {}, []
    for line in lines[1:-1]:
        if line.startswith(("  node [", "  edge [")):
            continue
        if m := NODE.match(line):
            assert m[1] not in nodes, f"node {m[1]} declared twice"
            nodes[m[1]] = re.sub(r'\\(.)', lambda e: "\n" if e[1] == "n" else e[1], m[2]).split("\n")
        elif m := EDGE.match(line):
            edges.append((m[1], m[2]))
        else:
            pytest.fail(f"a line the parser does not understand: {line!r}")
    undeclared = {n for e in edges for n in e} - set(nodes)
    assert not undeclared, f"edges to undeclared nodes {undeclared}"
    return nodes, edges


def graph_of(t):
    """(Functions, leaf Tensors) behind t, walked here without recursion, independently of viz."""
    fns, leaves, stack = {}, {}, [t]
    while stack:
        x = stack.pop()
        if x.creator is None:
            leaves[id(x)] = x
        elif id(x.creator) not in fns:
            fns[id(x.creator)] = x.creator
            stack.extend(x.creator.inputs)
    return list(fns.values()), list(leaves.values())


def tiny_gpt_loss():
    config = GPTConfig(vocab_size=65, block_size=8, n_layer=1, n_head=2, n_embd=16)
    tl.manual_seed(0)
    model = GPT(config)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 65, (2, 2, 8))
    return model, model(x, y)[1]


# ========================================= to_dot ============================================

def test_gpt_graph_has_one_node_per_op_and_every_parameter_name():
    model, loss = tiny_gpt_loss()
    nodes, edges = parse_dot(tensorlite.viz.to_dot(loss, model))
    fns, leaves = graph_of(loss)
    assert len(nodes) == len(fns) + len(leaves)
    op_names = {type(fn).__name__ for fn in fns}
    assert Counter(lines[0] for lines in nodes.values() if lines[0] in op_names) == \
        Counter(type(fn).__name__ for fn in fns)
    assert len(edges) == sum(len(fn.inputs) for fn in fns)
    labels = {lines[0] for lines in nodes.values()}
    for name, p in model.named_parameters():
        assert name in labels, f"parameter {name} is not in the graph"
    assert "CrossEntropy" in labels and "CausalSoftmax" in labels and "LayerNorm" in labels


def test_same_graph_before_and_after_backward():
    model, loss = tiny_gpt_loss()
    before = tensorlite.viz.to_dot(loss, model)
    loss.backward()                                     # frees saved arrays, keeps .inputs
    assert tensorlite.viz.to_dot(loss, model) == before


def test_labels_shapes_and_edges_of_a_small_graph():
    w = tl.tensor(np.ones((3, 4)), requires_grad=True)
    b = tl.tensor(np.zeros(4), requires_grad=True)
    b.name = 'the "bias"'                               # .name wins, and quotes are escaped
    x = tl.tensor(np.ones((2, 3)))
    y = ((x @ w + b) * (x @ w + b)).sum()
    nodes, edges = parse_dot(tensorlite.viz.to_dot(y, {id(w): "w", id(b): "ignored"}))
    labels = sorted(nodes.values())
    assert labels == sorted([["Sum", "()"], ["Mul", "(2, 4)"], ["Add", "(2, 4)"], ["Add", "(2, 4)"],
                             ["MatMul", "(2, 4)"], ["MatMul", "(2, 4)"], ["w", "(3, 4)"],
                             ['the "bias"', "(4,)"], ["input (2, 3)"]])
    assert len(edges) == 1 + 2 + 2 * 2 + 2 * 2          # Sum, Mul, two Adds, two MatMuls


def test_an_input_used_twice_gives_two_edges():
    x = tl.tensor(np.ones(3), requires_grad=True)
    nodes, edges = parse_dot(tensorlite.viz.to_dot(x * x))
    assert len(nodes) == 2 and len(edges) == 2 and edges[0] == edges[1]


def test_a_leaf_alone_is_one_node():
    x = tl.tensor(np.ones((2, 5)), requires_grad=True)
    nodes, edges = parse_dot(tensorlite.viz.to_dot(x))
    assert list(nodes.values()) == [["input (2, 5)"]] and edges == []


def test_a_deep_graph_needs_no_recursion():
    n = 3 * sys.getrecursionlimit()
    x = tl.tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(n):
        y = y + 1.0
    nodes, edges = parse_dot(tensorlite.viz.to_dot(y))
    assert len(nodes) == 1 + 2 * n and len(edges) == 2 * n     # x, n Adds, n constants 1.0


def test_param_names_must_be_a_module_or_a_dict():
    x = tl.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(TypeError, match="Module or a dict"):
        tensorlite.viz.to_dot(x * 2.0, ["x"])


# ======================================= draw_graph ==========================================

def test_draw_graph_writes_dot(tmp_path, capsys):
    assert load_example("draw_graph").main(["--out", str(tmp_path)]) == 0
    nodes, _ = parse_dot((tmp_path / "graph.dot").read_text())
    assert ["transformer.h.0.attn.c_attn.weight", "(48, 16)"] in nodes.values()
    if shutil.which("dot"):
        assert (tmp_path / "graph.svg").stat().st_size > 0 and (tmp_path / "graph.png").stat().st_size > 0


def test_draw_graph_without_graphviz_says_so(tmp_path, capsys, monkeypatch):
    draw_graph = load_example("draw_graph")
    monkeypatch.setattr(draw_graph.shutil, "which", lambda name: None)
    assert draw_graph.main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "graph.dot").exists() and not (tmp_path / "graph.svg").exists()
    said = capsys.readouterr().out
    assert "`dot` is not installed" in said
    assert f"`dot -Tsvg {tmp_path / 'graph.dot'} -o {tmp_path / 'graph.svg'}`" in said   # works as pasted


# ================================ attention_map and plot_loss ================================

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A two-step training run of a one-layer GPT on a made-up text: ckpt.pkl and metrics.jsonl."""
    out = tmp_path_factory.mktemp("run")
    model_cfg, train_cfg = gpt.preset("cpu", vocab_size=len(set(TEXT)), n_layer=1, n_embd=16, n_head=2,
                                      block_size=16, max_iters=2, eval_interval=1, eval_iters=1,
                                      batch_size=2, sample_chars=0)
    gpt.train.run(model_cfg, train_cfg, TEXT, out, progress=False, log=lambda *a: None)
    return out


def assert_png_has_a_picture(path):
    plt = pytest.importorskip("matplotlib.pyplot", reason=NEEDS_MPL)
    image = plt.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100, f"{path}: shape {image.shape}"
    assert image[..., :3].var() > 0, f"{path} is a blank image"


def test_attention_maps_are_causal_and_rows_sum_to_one(run_dir):
    attention_map = load_example("attention_map")
    model, tok = gpt.train.model_from_checkpoint(gpt.train.load_checkpoint(run_dir))
    maps = attention_map.attention_maps(model, tok.encode("ROMEO:")[None, :])
    assert len(maps) == 1 and maps[0].shape == (2, 6, 6)             # n_layer x (nh, T, T)
    np.testing.assert_allclose(maps[0].sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(maps[0], k=1) == 0)                       # the future gets no weight
    assert not model.transformer.h[0].attn.record_attention          # switched off again


def test_attention_map_png(run_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason=NEEDS_MPL)
    long_prompt = "ROMEO:\nWhat say you, fair Juliet?"                 # longer than block_size 16
    assert load_example("attention_map").main(
        ["--checkpoint", str(run_dir), "--prompt", long_prompt, "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attention_layer0.png"]
    assert_png_has_a_picture(tmp_path / "attention_layer0.png")


def test_attention_map_without_matplotlib(run_dir, tmp_path, capsys, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)              # import matplotlib fails
    assert load_example("attention_map").main(["--checkpoint", str(run_dir), "--out", str(tmp_path)]) == 1
    assert 'pip install -e ".[viz]"' in capsys.readouterr().err


def test_plot_loss_png(run_dir, tmp_path):
    pytest.importorskip("matplotlib", reason=NEEDS_MPL)
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3   # steps 0, 1, 2
    assert load_example("plot_loss").main([str(run_dir), "--out", str(tmp_path / "loss.png")]) == 0
    assert_png_has_a_picture(tmp_path / "loss.png")


def test_plot_loss_missing_or_empty_metrics(tmp_path):
    plot_loss = load_example("plot_loss")
    with pytest.raises(FileNotFoundError, match="no metrics at"):
        plot_loss.main([str(tmp_path)])
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        plot_loss.main([str(tmp_path)])
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 0, "train_loss": 4.2}) + "\n")
    with pytest.raises(ValueError, match=r"holds no good metrics line"):
        plot_loss.main([str(tmp_path)])


def test_plot_loss_drops_a_damaged_line_with_the_warning_resume_gives(run_dir, tmp_path, capsys):
    """A run killed while writing a line: plot_loss plots the good lines and warns about the
    damaged ones in the words --resume uses (it used to refuse the whole file)."""
    pytest.importorskip("matplotlib", reason=NEEDS_MPL)
    from gpt.checkpoint import truncate_metrics
    path = tmp_path / "metrics.jsonl"
    path.write_text((run_dir / "metrics.jsonl").read_text() + '{"step": 1, "val_loss": 3.0}\n{"step": 3, "train_lo')
    assert load_example("plot_loss").main([str(path), "--out", str(tmp_path / "loss.png")]) == 0
    warnings = capsys.readouterr().err.splitlines()
    assert [w.split(": dropped")[0] for w in warnings] == [f"warning: {path}:4", f"warning: {path}:5"]
    assert_png_has_a_picture(tmp_path / "loss.png")
    said_on_resume = []
    truncate_metrics(path, 10, warn=said_on_resume.append)
    assert said_on_resume == warnings[1:]       # the same reader, the same words (it needs no losses)
