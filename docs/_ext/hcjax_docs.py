"""Sphinx extension of the hcjax documentation (build-time generation and checks).

* ``builder-inited``: writes the API reference (one page per public module of
  :mod:`hcjax`, found by walking the package) into ``docs/api/generated/`` and
  copies ``experiments/RESULTS.md`` with its ``results/`` tree into
  ``docs/experiments/`` (both gitignored, rebuilt on every build), with each
  figure the text names inserted as an image after its paragraph and an index
  page per result directory.
* ``autodoc-process-docstring``: a public module, class, function, method or
  property without a docstring is a warning, so ``-W`` fails the build.
* ``missing-reference``: a reference to a re-exported name
  (``hcjax.hct.HCTConfig``, ``hcjax.Trainer``) resolves to the object's
  defining module, where it is documented once.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import shutil

from sphinx.util import logging

logger = logging.getLogger(__name__)
DOCS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(DOCS)
CHECKED = {"module", "class", "exception", "function", "method", "property", "classmethod", "staticmethod"}


# ----------------------------------------------------------------------------------------------- API pages
def public_modules(package: str = "hcjax") -> list[str]:
    """Every importable public module of ``package`` (no part starting with ``_``), sorted."""
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, package + "."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _module_page(name: str, children: list[str]) -> str:
    module = importlib.import_module(name)
    is_package = hasattr(module, "__path__")
    options = ["   :members:", "   :undoc-members:", "   :show-inheritance:"]
    if is_package or not hasattr(module, "__all__"):
        options.append("   :ignore-module-all:")  # document each object once, where it is defined
    lines = [name, "=" * len(name), "", f".. automodule:: {name}", *options, ""]
    if children:
        lines += [".. toctree::", "   :maxdepth: 1", "   :caption: Modules", ""]
        lines += [f"   {child}" for child in children] + [""]
    return "\n".join(lines)


def write_api_pages(out_dir: str) -> list[str]:
    """Write one reStructuredText page per public module into ``out_dir``; returns the module names."""
    names = public_modules()
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    for name in names:
        children = [n for n in names if n.rpartition(".")[0] == name]
        with open(os.path.join(out_dir, name + ".rst"), "w") as f:
            f.write(_module_page(name, children))
    return names


# ---------------------------------------------------------------------------------------------- results
_FIGURE = re.compile(r"`([\w./-]+\.png)`")


def inline_figures(text: str, base: str) -> str:
    """``text`` with every figure named in backticks (``results/x/fig.png``) shown as an image after its
    paragraph; a bare file name is relative to the last directory named before it in that paragraph."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        images, last_dir = [], ""
        for path in _FIGURE.findall(block):
            if "/" in path:
                last_dir = os.path.dirname(path)
            else:
                path = os.path.join(last_dir, path)
            if not os.path.isfile(os.path.join(base, path)):
                logger.warning(f"RESULTS.md names a figure that does not exist: {path}")
                continue
            images.append(f"![{os.path.basename(path)}]({path})")
        out.append(block if not images else block + "\n\n" + "\n\n".join(images))
    return "\n\n".join(out) + "\n"


def _directory_index(directory: str, rel: str) -> str:
    """An index page of one result directory: its figures inline, its tables and subdirectories as pages,
    its raw files as downloads."""
    files = sorted(os.listdir(directory))
    subdirs = [f for f in files if os.path.isdir(os.path.join(directory, f))]
    lines = [f"# {rel}", "", f"Every file of `experiments/{rel}`.", ""]
    pages = [f[:-3] for f in files if f.endswith(".md") and f != "index.md"] + [f"{d}/index" for d in subdirs]
    if pages:
        lines += ["```{toctree}", ":maxdepth: 1", "", *pages, "```", ""]
    lines += [f"![{f}]({f})\n" for f in files if f.endswith(".png")]
    raw = [f for f in files if not f.endswith((".md", ".png")) and f not in subdirs]
    lines += [f"- {{download}}`{f} <{f}>`" for f in raw]
    return "\n".join(lines) + "\n"


def _titled(path: str, title: str) -> None:
    """Give a copied Markdown table without a heading one (every page needs a title)."""
    with open(path) as f:
        text = f.read()
    if not text.lstrip().startswith("#"):
        with open(path, "w") as f:
            f.write(f"# {title}\n\n{text}")


def copy_results(out_dir: str) -> None:
    """Copy ``experiments/RESULTS.md`` and ``experiments/results/`` into ``out_dir`` (a build-time copy),
    with the figures inline and an index page per result directory."""
    src = os.path.join(ROOT, "experiments")
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    results = os.path.join(out_dir, "results")
    shutil.copytree(os.path.join(src, "results"), results)
    for here, dirs, files in sorted(os.walk(results, topdown=False)):
        rel = os.path.relpath(here, out_dir)
        for name in files:
            if name.endswith(".md"):
                _titled(os.path.join(here, name), f"{rel}/{name}")
        if here != results:
            with open(os.path.join(here, "index.md"), "w") as f:
                f.write(_directory_index(here, rel))
    with open(os.path.join(src, "RESULTS.md")) as f:
        text = f.read()
    tops = sorted(d for d in os.listdir(results) if os.path.isdir(os.path.join(results, d)))
    for d in tops:  # a link to a result directory goes to its index page
        text = text.replace(f"](results/{d}/)", f"](results/{d}/index.md)")
    toctree = "\n```{toctree}\n:hidden:\n\n" + "\n".join(f"results/{d}/index" for d in tops) + "\n```\n"
    with open(os.path.join(out_dir, "RESULTS.md"), "w") as f:
        f.write(inline_figures(text, out_dir) + toctree)


# ----------------------------------------------------------------------------------------------- checks
_FIELD = re.compile(r"^([A-Za-z_]\w*(?:, [A-Za-z_]\w*)*): (\S.*)$")


_CODE = re.compile(r"(``.*?``|`[^`]*`)")


def escape_bars(line: str) -> str:
    """``line`` with every ``|`` outside code escaped: the docstrings write norms as plain text (``|x|``),
    which reStructuredText would read as a substitution reference."""
    if line.lstrip().startswith(("|", "+-")):  # a table row
        return line
    return "".join(part if _CODE.fullmatch(part) else part.replace("|", "\\|") for part in _CODE.split(line))


def fields_to_bullets(lines: list[str]) -> list[str]:
    """Render the docstrings' ``name: description`` field lines (continued by indented lines) as a bullet
    list with the names as code, in place of the definition lists reStructuredText would guess from them.

    Only a run of at least two such fields, starting after a blank line, is rewritten.
    """
    out, i = [], 0
    while i < len(lines):
        run, j = [], i
        while j < len(lines) and _FIELD.match(lines[j]) and (j > i or i == 0 or not lines[i - 1].strip()):
            name, text = _FIELD.match(lines[j]).groups()
            item = ["* " + ", ".join(f"``{n}``" for n in name.split(", ")) + ": " + text]
            j += 1
            while j < len(lines) and lines[j].startswith(" ") and lines[j].strip():
                item.append("  " + lines[j].strip())
                j += 1
            run.append(item)
        if len(run) >= 2:
            out += [line for item in run for line in item]
            if j < len(lines) and lines[j].strip():
                out.append("")
            i = j
        else:
            out.append(lines[i])
            i += 1
    return out


def _is_missing(what: str, obj, lines: list[str]) -> bool:
    if any(line.strip() for line in lines):
        if what in ("class", "exception"):  # a dataclass without a docstring gets "Name(field: type, ...)"
            own = obj.__dict__.get("__doc__") if hasattr(obj, "__dict__") else None
            return not own or own.startswith(f"{obj.__name__}(")
        return False
    return True


def check_docstring(app, what, name, obj, options, lines) -> None:
    """Warn (an error under ``-W``) when a public object has no docstring; render its field lists."""
    lines[:] = fields_to_bullets([escape_bars(line) for line in lines])
    if what in CHECKED and not name.rpartition(".")[2].startswith("_") and _is_missing(what, obj, lines):
        logger.warning(f"public {what} without a docstring: {name}", type="hcjax", subtype="docstring")


def _canonical(target: str) -> str | None:
    """The defining module's name of ``target`` (``hcjax.hct.HCTConfig`` -> ``hcjax.hct.config.HCTConfig``)."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if cut == len(parts) or not (module and qualname):
            return None
        return f"{module}.{qualname}"
    return None


def resolve_alias(app, env, node, contnode):
    """Resolve a reference to a re-exported hcjax name at the place where the object is documented."""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("hcjax."):
        return None
    canonical = _canonical(target)
    if canonical is None or canonical == target:
        return None
    domain = env.get_domain("py")
    node = node.deepcopy()
    node["reftarget"] = canonical
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], canonical, node, contnode)


def generate(app) -> None:
    """Write the API pages and the results copy before Sphinx reads the sources."""
    write_api_pages(os.path.join(app.srcdir, "api", "generated"))
    copy_results(os.path.join(app.srcdir, "experiments"))


def setup(app):
    """Register the hcjax documentation hooks."""
    app.connect("builder-inited", generate)
    app.connect("autodoc-process-docstring", check_docstring)
    app.connect("missing-reference", resolve_alias)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
