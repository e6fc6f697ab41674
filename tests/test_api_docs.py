"""docs/api: the API reference covers every public name of tensorlite, tensorlite.torch and gpt,
each with a docstring, and is up to date with the code.

The checks of names, docstrings and pages need only the standard library. Whether the whole
reference is up to date is checked by regenerating it, which needs pdoc (`pip install pdoc`, the
version the pages were made with) and skips, saying so, otherwise.
"""
import filecmp
import html
import importlib.util
import inspect
import json
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api"
REGENERATE = "regenerate with: python docs/api/generate.py"


def load_generator():
    spec = importlib.util.spec_from_file_location("api_docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = load_generator()
NAMES = json.loads((DOCS / "names.json").read_text())


def test_every_public_module_and_name_is_in_the_reference():
    live, _ = gen.collect()
    assert set(NAMES) == set(live), f"modules changed; {REGENERATE}"
    for module, entries in live.items():
        assert set(NAMES[module]) == set(entries), f"{module}: public names changed; {REGENERATE}"
    for must in ["tensorlite", "tensorlite.torch", "tensorlite.torch.nn", "tensorlite.torch.nn.functional",
                 "tensorlite.nn", "tensorlite.functional", "gpt", "gpt.lecture", "gpt.model"]:
        assert must in NAMES
    assert {"tensor", "zeros", "tril", "multinomial", "no_grad", "long", "cuda", "nn", "optim"} <= set(NAMES["tensorlite.torch"])
    assert {"Tensor.view", "Tensor.transpose", "Tensor.size", "Tensor.masked_fill"} <= set(NAMES["tensorlite.tensor"])
    assert "Module.register_buffer" in NAMES["tensorlite.nn"]


def test_every_public_name_has_a_docstring():
    missing = [f"{m}.{n}" for m, entries in gen.collect()[0].items() for n, line in entries.items() if not line]
    assert not missing, f"public names without a docstring (write one, or a line in SUPPLEMENT): {missing}"


def test_every_name_has_its_place_in_the_html_pages():
    for module, entries in NAMES.items():
        page = DOCS.joinpath(*module.split(".")).with_suffix(".html")
        assert page.is_file(), f"{page} missing; {REGENERATE}"
        html = page.read_text()
        mod = importlib.import_module(module)
        for name in entries:
            value = getattr(mod, name.split(".")[0])
            if inspect.ismodule(value):
                assert DOCS.joinpath(*value.__name__.split(".")).with_suffix(".html").is_file()
                continue
            assert f'id="{name}"' in html, f"{module}.{name} not on {page.name}; {REGENERATE}"
    index = (DOCS / "index.html").read_text()
    assert "tensorlite.torch" in index and "gpt.lecture" in index


def test_the_markdown_reference_shows_signatures():
    text = (DOCS / "README.md").read_text()
    assert "- **`softmax(input, dim=None, dtype=None)`**: exp(x) / sum(exp(x)) along dim" in text
    assert re.search(r"^  - `transpose\(self, \*axes\)`: Two axes swap them", text, re.M)
    assert "## `tensorlite.torch.nn.functional`" in text


def test_the_reference_is_what_the_generator_makes_of_the_code_today(tmp_path):
    """Every page, README.md and names.json, regenerated, equal the committed ones."""
    pdoc = pytest.importorskip("pdoc", reason="pdoc not installed: the HTML's freshness is not checked (pip install pdoc)")
    made_with = re.search(r"<meta name=\"generator\" content=\"pdoc ([\w.]+)\"", (DOCS / "index.html").read_text()).group(1)
    if made_with != pdoc.__version__:
        pytest.skip(f"the pages were made with pdoc {made_with}, pdoc {pdoc.__version__} is installed: "
                    "its HTML differs, so freshness is not compared")
    assert gen.main(tmp_path) == 0
    ours = sorted(p.relative_to(DOCS) for p in DOCS.rglob("*") if p.suffix in (".html", ".json", ".md"))
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert ours == fresh, REGENERATE
    stale = [str(p) for p in fresh if not same_page(DOCS / p, tmp_path / p)]
    assert not stale, f"out of date: {stale}; {REGENERATE}"


def same_page(a, b):
    """Equal files; HTML compared as the text it shows, so that one Pygments escaping a quote
    as &#39; and another writing it plainly (2.20 and 2.21 do) is not a difference."""
    if filecmp.cmp(a, b, shallow=False):
        return True
    return a.suffix == ".html" and html.unescape(a.read_text()) == html.unescape(b.read_text())


def test_pages_that_differ_only_in_how_a_quote_is_escaped_are_the_same(tmp_path):
    a, b, c = tmp_path / "a.html", tmp_path / "b.html", tmp_path / "c.html"
    a.write_text("<span class='s1'>&#39;cpu&#39;</span>")
    b.write_text("<span class='s1'>'cpu'</span>")
    c.write_text("<span class='s1'>'cuda'</span>")
    assert same_page(a, b) and not same_page(a, c)
