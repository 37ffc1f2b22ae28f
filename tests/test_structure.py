"""The code's shape: short functions and modules, no print or bare except in the library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "unetseg"
MODULES = sorted(SRC.rglob("*.py"))
MAX_FUNCTION_LINES = 60  # def line to last line, docstring included
MAX_MODULE_LINES = 600


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_modules_and_functions_are_short(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path}: {len(text.splitlines())} lines"
    long = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines)" for f in _functions(ast.parse(text))
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path}: {', '.join(long)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_library_never_prints_and_never_catches_everything(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_cli = "cli" in path.relative_to(SRC).parts
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler):
            assert node.type is not None, f"{path}:{node.lineno}: bare except"
        if not in_cli and isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            pytest.fail(f"{path}:{node.lineno}: print in the library")


def test_inference_never_recognises_a_model_by_its_class_name():
    for path in (SRC / "inference").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert '"FusionNet"' not in text and "__name__ ==" not in text, path
