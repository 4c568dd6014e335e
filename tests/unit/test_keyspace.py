"""Keyspace: every name written in a shared store is under the deployment's namespace."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from app.backends.keyspace import DEFAULT_NAMESPACE, Keyspace

APP = Path(__file__).resolve().parents[2] / "app"
HARD_CODED = re.compile(rf"{DEFAULT_NAMESPACE}:\S")  # "virtuoso:lock:", not "virtuoso: error"


def test_names_and_prefixes_carry_the_namespace() -> None:
    keyspace = Keyspace("staging-2")
    assert keyspace.name("lock", "refresh") == "staging-2:lock:refresh"
    assert keyspace.name("refreshed") == "staging-2:refreshed"
    assert keyspace.prefix("realtime", "seq") == "staging-2:realtime:seq:"


def test_the_empty_namespace_leaves_the_prefix_out() -> None:
    assert Keyspace("").name("lock", "refresh") == "lock:refresh"
    assert Keyspace("").prefix("session") == "session:"


@pytest.mark.parametrize("namespace", ["two words", "a:b", "x" * 65, "é"])
def test_an_unusable_namespace_is_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        Keyspace(namespace)


def _string_constants(tree: ast.AST) -> list[ast.Constant]:
    """Every string literal but docstrings."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_module_hard_codes_a_namespace() -> None:
    """A name like ``virtuoso:lock:`` written into the code ignores the configured
    namespace (two deployments sharing a Redis then lock, count and announce in each
    other's names): every shared name comes from a Keyspace."""
    found = [
        f"{path.relative_to(APP.parent)}:{node.lineno}: {node.value!r}"
        for path in sorted(APP.rglob("*.py"))
        for node in _string_constants(ast.parse(path.read_text(), str(path)))
        if HARD_CODED.match(node.value)
    ]
    assert found == []
