"""The package surface: lazy top-level names, fast import, and the layout rules of the code base."""

import ast
import pathlib
import subprocess
import sys

import hcjax

ROOT = pathlib.Path(hcjax.__file__).parent


def test_every_top_level_name_resolves_to_the_documented_object():
    from hcjax.engine import population
    from hcjax.hct import run

    for name in hcjax.__all__:
        assert getattr(hcjax, name) is not None, name
    assert hcjax.Trainer is population.Trainer and hcjax.run_hct is run.run_hct


def test_import_hcjax_loads_no_heavy_module():
    """``import hcjax`` must not import jax, orbax or the theory stack (``hcjax --help`` stays fast)."""
    code = "import sys, hcjax; print(sorted(m for m in ('jax', 'orbax', 'hcjax.theory', 'hcjax.hct') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _code_lines(node) -> int:
    """Lines of a function or class without its docstring."""
    lines = node.end_lineno - node.lineno + 1
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        lines -= body[0].end_lineno - body[0].lineno + 1
    return lines


def test_size_rules_modules_classes_functions():
    """No module over 400 lines, class over 150 or function over 80 (docstrings aside): one concept per unit."""
    too_big = []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        doc = ast.get_docstring(tree, clean=False)
        module_lines = len(text.splitlines()) - (len(doc.splitlines()) if doc else 0)
        if module_lines > 400:
            too_big.append(f"{path.relative_to(ROOT)}: {module_lines} lines")
        for node in ast.walk(tree):
            limit = {ast.ClassDef: 150, ast.FunctionDef: 80}.get(type(node))
            if limit and _code_lines(node) > limit:
                too_big.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {_code_lines(node)} lines")
    assert not too_big, too_big
