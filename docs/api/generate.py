"""Generate the API reference in docs/api/ from the docstrings.

    pip install pdoc          # or: pip install -e ".[docs]"
    python docs/api/generate.py

writes
    docs/api/index.html ...   pdoc's HTML pages, one per module (open docs/api/index.html)
    docs/api/README.md        every public name with its signature and one line (reads on GitHub)
    docs/api/names.json       {module: {name: one line}}, what tests/test_api_docs.py checks

The documented modules are every public module of tensorlite and gpt (no part of the name
starting with "_").
A module's public names are its __all__, or else the classes and functions it defines whose
names do not start with "_". A name without a docstring in the code takes its line from
SUPPLEMENT below; tests/test_api_docs.py fails for a public name that has neither.
"""
import ast
import dataclasses
import importlib
import inspect
import json
import pkgutil
import re
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PACKAGES = ("tensorlite", "gpt")
EXCLUDE = set()   # module names left out of the reference

# One line for public names whose code has no docstring yet (the code's docstring wins once written).
SUPPLEMENT = {
    "tensorlite.backend.device_of": '"cpu" for a NumPy array, "cuda" for a CuPy array.',
    "tensorlite.backend.as_cupy": "The array as a CuPy array (copied to the GPU); DeviceError without CuPy.",
    "gpt.PRESETS": "The presets by name, 'lecture' (the lecture's 6 x 384 model, for a GPU) and 'cpu' (4 x 128): model and training settings.",
    "gpt.GPTConfig": "The model's settings: vocabulary, context length, layers, heads, width, dropout, bias, activation, tied weights.",
    "gpt.config.GPTConfig": "The model's settings: vocabulary, context length, layers, heads, width, dropout, bias, activation, tied weights.",
    "gpt.TrainConfig": "The training run's settings: batch, steps, evaluation, learning rate and schedule, weight decay, clipping, seed.",
    "gpt.config.TrainConfig": "The training run's settings: batch, steps, evaluation, learning rate and schedule, weight decay, clipping, seed.",
    "gpt.GPT": "The GPT of the lecture in nanoGPT's layout: token and position embeddings, n_layer Blocks, a final layer norm, lm_head.",
    "gpt.model.GPT": "The GPT of the lecture in nanoGPT's layout: token and position embeddings, n_layer Blocks, a final layer norm, lm_head.",
    "gpt.model.GPT.new_cache": "A KVCache for this model's block_size, for generation.",
    "gpt.model.MLP": "The feed-forward of a Block: Linear C -> 4C, GELU (or ReLU), Linear 4C -> C, dropout.",
    "gpt.model.LanguageModel.device": "The device of the model's parameters.",
    "gpt.model.LanguageModel.new_cache": "A cache for generation (None for models without attention).",
    "gpt.model.KVCache.reset": "Forget every kept key and value.",
    "gpt.model.KVCache.length": "How many positions are kept for one attention layer.",
    "gpt.data.CharTokenizer.from_dict": "Rebuild a tokenizer from to_dict()'s output.",
    "gpt.data.CharTokenizer.to_dict": "The vocabulary as {'chars': [...]}, for checkpoints.",
    "tensorlite.gradcheck.InputReport": "One input's comparison in gradcheck_report: its shape, the mode, the largest errors, the worst element, and whether it passed.",
    "gpt.generate.KVCache.reset": "Forget every kept key and value.",
    "gpt.generate.KVCache.length": "How many positions are kept for one attention layer.",
    "tensorlite.kernels.cuda.contiguous": "The CuPy array in C order (None stays None), as the kernels index it.",
    "tensorlite.kernels.cuda.GELU.supports": "Whether this kernel takes the call (dtype, shapes); when it does not, the reference op runs.",
    "tensorlite.kernels.cuda.CausalSoftmax.supports": "Whether this kernel takes the call (dtype, shapes); when it does not, the reference op runs.",
    "tensorlite.kernels.cuda.LayerNorm.supports": "Whether this kernel takes the call (dtype, shapes); when it does not, the reference op runs.",
    "tensorlite.kernels.cuda.CrossEntropy.supports": "Whether this kernel takes the call (dtype, shapes); when it does not, the reference op runs.",
    "tensorlite.kernels.cuda.Embedding.supports": "Whether this kernel takes the call (dtype, shapes); when it does not, the reference op runs.",
    "tensorlite.kernels.cuda.Dropout.supports": "Whether this kernel takes the call (dtype, shapes); when it does not, the reference op runs.",
}


# ---- what is public ----------------------------------------------------------------------------

def public_modules():
    """The names of the documented modules, packages before their submodules."""
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(module.__path__, package + "."):
            parts = info.name.split(".")
            if any(p.startswith("_") for p in parts) or info.name in EXCLUDE:
                continue
            names.append(info.name)
    return sorted(names, key=lambda n: n.split("."))


def public_names(module):
    """The module's __all__, else the classes and functions it defines, not named with "_"."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, value in vars(module).items() if not name.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ == module.__name__]


def class_members(cls):
    """The public methods and properties a class defines itself (inherited ones are listed with
    the class that defines them)."""
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            out.append(name)
    return out


# ---- one line per name -----------------------------------------------------------------------

def first_paragraph(doc):
    """The docstring's first paragraph as one line."""
    doc = inspect.cleandoc(doc or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def own_doc(value, member_of=None, name=None):
    """The docstring the code gives the object: a class its own (not a base class's, nor the
    signature a dataclass writes in place of a missing one); a method its own or, as
    inspect.getdoc and pdoc do, the one of the method it overrides; plain values none here."""
    if member_of is not None:
        return inspect.getdoc(getattr(member_of, name)) or ""
    if inspect.isclass(value):
        doc = value.__doc__ or ""
        if dataclasses.is_dataclass(value) and doc.startswith(value.__name__ + "("):
            return ""
        return doc
    if inspect.ismodule(value) or callable(value):
        return inspect.getdoc(value) or ""
    return ""


def one_line(qualname, value, member_of=None, name=None):
    return first_paragraph(own_doc(value, member_of, name)) or SUPPLEMENT.get(qualname, "")


def signature(value, name):
    if isinstance(value, property):
        return name
    target = value
    try:
        sig = str(inspect.signature(target))
    except (TypeError, ValueError):
        return name
    return f"{name}{sig.removesuffix(' -> None')}"


def collect():
    """{module: {name: one line}} and the Markdown reference."""
    names, md = {}, []
    listed = {}      # class -> the module under which its members are written out
    for modname in public_modules():
        module = importlib.import_module(modname)
        entries = {}
        md.append(f"\n## `{modname}`\n\n{first_paragraph(module.__doc__)}\n")
        for name in public_names(module):
            value = getattr(module, name)
            qual = f"{modname}.{name}"
            line = one_line(qual, value)
            if not line and not inspect.isclass(value) and not callable(value) and not inspect.ismodule(value):
                line = _value_doc(modname, name, value)
            entries[name] = line
            if inspect.ismodule(value):
                md.append(f"- `{name}`: module [`{value.__name__}`](#{_anchor(value.__name__)})")
                continue
            home = getattr(value, "__module__", modname)
            kind = "class " if inspect.isclass(value) else ""
            if inspect.isclass(value) and value.__module__ == "numpy":      # a dtype under PyTorch's name
                kind, shown = "", f"{name} = numpy.{value.__name__}"
            elif inspect.isclass(value) or callable(value):
                shown = signature(value, name)
            else:
                shown = f"{name}: {_short(value)}"
            where = ""
            if inspect.isclass(value) and home != modname and home in _documented():
                where = f" (from `{home}`)"
            elif inspect.isclass(value) and value in listed and listed[value] != modname:
                where = f" (members under `{listed[value]}`)"
            md.append(f"- {kind}**`{shown}`**{where}: {line}")
            if inspect.isclass(value) and value.__module__.split(".")[0] in PACKAGES and value not in listed \
                    and (home == modname or home not in _documented()):
                listed[value] = modname
                for member in class_members(value):
                    mqual = f"{qual}.{member}"
                    mline = one_line(mqual, None, value, member)
                    entries[f"{name}.{member}"] = mline
                    attr = vars(value)[member]
                    attr = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
                    md.append(f"  - `{signature(attr, member)}`: {mline}")
        names[modname] = entries
    return names, md


_DOCUMENTED = None


def _documented():
    global _DOCUMENTED
    if _DOCUMENTED is None:
        _DOCUMENTED = set(public_modules())
    return _DOCUMENTED


def _anchor(modname):
    return re.sub(r"[^a-z0-9_-]", "", modname.lower())  # GitHub's anchor for "## `name`": no backticks, no dots


def _short(value):
    """A value's type, as shown beside its name."""
    return type(value).__name__


def _value_doc(modname, name, value):
    """The line of a module-level value: the string literal right after its assignment (how
    pdoc reads a variable's docstring), or its SUPPLEMENT entry."""
    module = importlib.import_module(modname)
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        tree = None
    body = tree.body if tree else []
    for stmt, after in zip(body, body[1:]):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and isinstance(after, ast.Expr) \
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            return first_paragraph(after.value.value)
    return SUPPLEMENT.get(f"{modname}.{name}", "")


def write_markdown(md, path):
    header = ["# API reference", "",
              "Every public name of `tensorlite`, `tensorlite.torch` and `gpt`, with its signature and "
              "the first line of its docstring. Generated by `python docs/api/generate.py` (which also "
              "writes the full pages: open [index.html](index.html)); do not edit by hand.", "",
              "Modules: " + ", ".join(f"[`{m}`](#{_anchor(m)})" for m in public_modules())]
    path.write_text("\n".join(header + md) + "\n")


def main(out=HERE):
    sys.path.insert(0, str(ROOT))
    import pdoc
    import pdoc.render

    out = Path(out)
    names, md = collect()
    missing = [f"{m}.{n}" for m, entries in names.items() for n, line in entries.items() if not line]
    if missing:
        print("public names without a docstring (write one, or add a line to SUPPLEMENT):\n  "
              + "\n  ".join(missing), file=sys.stderr)
    for name in SUPPLEMENT:
        if _resolve(name) is None:
            print(f"note: {name} is not in the code; its SUPPLEMENT line is unused", file=sys.stderr)
        elif _has_code_doc(name):
            print(f"note: {name} now has a docstring in the code; its SUPPLEMENT line is unused", file=sys.stderr)
    applied = _apply_supplement()
    pdoc.render.configure(docformat="markdown", show_source=False, search=False,
                          footer_text=f"tensorlite + gpt, generated by pdoc {pdoc.__version__}")
    with warnings.catch_warnings():   # a package's spec already adds its submodules: not a problem
        warnings.filterwarnings("ignore", message="The module specification .* adds a module named")
        pdoc.pdoc(*public_modules(), output_directory=out)
    _restore(applied)
    _drop_checkout_path(out)
    write_markdown(md, out / "README.md")
    (out / "names.json").write_text(json.dumps(names, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}: {sum(len(e) for e in names.values())} names in {len(names)} modules")
    return 1 if missing else 0


def _drop_checkout_path(out):
    """A value computed from where the code lies (tensorlite.kernels.cuda.KERNEL_DIR) would show
    this checkout's path: pages written in two checkouts would differ. Write "..." for it."""
    for page in Path(out).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        if str(ROOT) in text:
            page.write_text(text.replace(str(ROOT), "..."), encoding="utf-8")


def _resolve(qualname):
    """(owner, attribute, object) of a dotted name, to set its __doc__ on; None when the code
    has no such name."""
    parts = qualname.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        owner = None
        for p in parts[i:]:
            if not hasattr(obj, p):
                return None
            owner, obj = obj, getattr(obj, p)
        return owner, parts[-1], obj
    return None


def _has_code_doc(qualname):
    owner, name, obj = _resolve(qualname)
    target = vars(owner).get(name, obj) if inspect.isclass(owner) else obj
    target = target.__func__ if isinstance(target, (staticmethod, classmethod)) else target
    documentable = inspect.isfunction(target) or inspect.isclass(target) or isinstance(target, property)
    return documentable and bool(own_doc(target) if inspect.isclass(target) else target.__doc__)


def _apply_supplement():
    """Give the undocumented objects their SUPPLEMENT docstring while pdoc renders."""
    applied = []
    for qualname, line in SUPPLEMENT.items():
        if _resolve(qualname) is None:
            continue
        owner, name, obj = _resolve(qualname)
        target = vars(owner).get(name, obj) if inspect.isclass(owner) else obj
        target = target.__func__ if isinstance(target, (staticmethod, classmethod)) else target
        if isinstance(target, property):
            if not target.__doc__:
                new = property(target.fget, target.fset, target.fdel, line)
                setattr(owner, name, new)
                applied.append((owner, name, target))
        elif inspect.isfunction(target) or inspect.isclass(target):
            if not own_doc(target):
                target.__doc__ = line
                applied.append((target, "__doc__", None))
    return applied


def _restore(applied):
    for owner, name, old in applied:
        if name == "__doc__":
            owner.__doc__ = old
        else:
            setattr(owner, name, old)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
