"""Every error the library raises about its arguments says how to fix it."""

from __future__ import annotations

import ast

from conftest import ROOT

from llm_lab.errors import type_error


def test_every_argument_error_in_the_library_has_a_fix():
    """``ArgumentError(arg, problem, fix)``: a call with two arguments prints no "(fix)" part."""
    without = []
    for path in sorted((ROOT / "llm_lab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            is_call = isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ArgumentError"
            if is_call and len(node.args) + len(node.keywords) < 3:
                without.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not without, without


def test_a_word_where_a_value_belongs_says_what_to_write():
    assert (
        str(type_error("use_cache", "maybe", "bool"))
        == "use_cache: 'maybe' is not true or false (write true or false)"
    )
    assert str(type_error("n", "abc", "int")).endswith("'abc' is not an integer (write an integer, e.g. 3)")
    # int | float asks for a number: one example, of the wider kind
    assert str(type_error("lr", "x", "int | float")).endswith("(write a number, e.g. 0.5)")
    assert type_error("n", 3, "int") is None and type_error("lr", 3, "float") is None
