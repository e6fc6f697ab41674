"""notebooks/lets-build-gpt.ipynb: stored without outputs, and executed top to bottom by
nbclient at small sizes (TENSORLITE_NOTEBOOK_SMALL=1) on a small text, as CI runs it. Its cells
assert what they show (the three averages agree, every gradcheck passes, attention rows sum to 1)."""
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "lets-build-gpt.ipynb"
TEXT = ("ROMEO:\nWhat say you? Speak, speak.\n\nFirst Citizen:\nBefore we proceed any further, "
        "hear me speak.\n\nAll:\nResolved. resolved.\n\n") * 60

nbformat = pytest.importorskip("nbformat", reason="nbformat not installed: pip install -e '.[test]'")


def test_the_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 15
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("## ")]
    assert headings == ["## 1. The data and the tokenizer", "## 2. Batches of chunks",
                        "## 3. The simplest baseline: the bigram language model",
                        "## 4. The mathematical trick in self-attention",
                        "## 5. One head, multi-head, feed-forward, residual blocks, layer norm",
                        "## 6. Scaling up", "## 7. What tensorlite shows that PyTorch keeps closed",
                        "## Where to go next"]
    assert "import tensorlite.torch as torch" in "".join(c.source for c in code)


def test_the_notebook_runs_at_small_sizes(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient", reason="nbclient not installed: pip install -e '.[test]'")
    data = tmp_path / "input.txt"
    data.write_text(TEXT)
    # the kernel inherits this process's environment
    monkeypatch.setenv("TENSORLITE_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("TINYSHAKESPEARE_PATH", str(data))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)   # the kernel's inline backend shows the figure
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()   # raises CellExecutionError, naming the cell, if any cell fails
    outputs = {i: "".join(o.get("text", "") for o in c.outputs) for i, c in enumerate(nb.cells)
               if c.cell_type == "code"}
    text = "\n".join(outputs.values())
    assert "True\nTrue" in text                                         # the averages agree
    assert text.count("-> pass") >= 8 and "-> FAIL" not in text          # every gradcheck
    assert "caught: gradient of input 0" in text                         # the wrong backward
    assert re.search(r"^10\.7\d+ M parameters$", text, re.M)            # the scale-up, V of the small text
    assert "layernorm" in text and "val loss" in text
    assert any(o.get("output_type") == "display_data" for c in nb.cells if c.cell_type == "code"
               for o in c.outputs)                                        # the attention figure
