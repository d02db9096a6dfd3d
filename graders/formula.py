"""A `multi` grader's `calculate_output`, e.g. "(accuracy + 0.5 * style) / 1.5" or "min(a, b) ^ 2".

The grammar is OpenAI's: numbers, the sub-graders' names, + - * / ^ (power), unary minus and plus,
parentheses, and the functions min max abs floor ceil exp sqrt log. The text is parsed once by Python's
own parser (after `^` becomes `**`: the grammar has no other use for it) and the tree is checked node by
node against exactly these forms, so nothing else (attributes, subscripts, lambdas, comprehensions,
keyword arguments, strings) can get through; evaluating it walks the same tree. Nothing is ever eval'd.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from graders.errors import GraderError

PARAM = "calculate_output"
MAX_LENGTH = 1000  # characters: a formula is a line, not a program
MAX_EXPONENT = 1000.0  # |exponent| above this is refused rather than risked (x ^ 1e9 on floats)

BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
FUNCTIONS: dict[str, tuple[Callable[..., float], int | None]] = {  # name -> (function, arity; None: 1+)
    "min": (min, None),
    "max": (max, None),
    "abs": (abs, 1),
    "floor": (math.floor, 1),
    "ceil": (math.ceil, 1),
    "exp": (math.exp, 1),
    "sqrt": (math.sqrt, 1),
    "log": (math.log, 1),
}


@dataclass(frozen=True)
class Formula:
    """A checked formula over `names`; `value(scores)` computes it."""

    text: str
    tree: ast.expr
    names: frozenset[str]  # the sub-grader names it uses

    def value(self, scores: Mapping[str, float]) -> float:
        try:
            result = float(_evaluate(self.tree, scores))
        except (ZeroDivisionError, OverflowError, ValueError) as exc:
            raise GraderError(PARAM, f"{self.text!r} has no value for {dict(scores)}: {exc}") from exc
        if not math.isfinite(result):
            raise GraderError(PARAM, f"{self.text!r} is {result} for {dict(scores)}")
        return result


def parse(text: str, names: set[str] | frozenset[str]) -> Formula:
    """Check `text` against the grammar, with `names` the sub-graders it may use; GraderError says where
    it breaks the grammar."""
    if len(text) > MAX_LENGTH:
        raise GraderError(PARAM, f"expected at most {MAX_LENGTH} characters, got {len(text)}")
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval").body
    except SyntaxError as exc:
        raise GraderError(PARAM, f"{text!r} is not a formula: {exc.msg}") from exc
    used: set[str] = set()
    _check(tree, set(names), used, text)
    return Formula(text, tree, frozenset(used))


def _check(node: ast.AST, names: set[str], used: set[str], text: str) -> None:
    def refuse(what: str) -> GraderError:
        return GraderError(
            PARAM,
            f"{text!r}: {what} is not allowed (numbers, the graders' names, + - * / ^, parentheses and "
            f"{', '.join(FUNCTIONS)} are)",
        )

    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise refuse(f"the constant {node.value!r}")
    elif isinstance(node, ast.Name):
        if node.id not in names:
            raise GraderError(
                PARAM, f"{text!r} names {node.id!r}, which is not one of the graders: {sorted(names)}"
            )
        used.add(node.id)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in BINARY:
            raise refuse(f"the operator {type(node.op).__name__}")
        _check(node.left, names, used, text)
        _check(node.right, names, used, text)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in UNARY:
            raise refuse(f"the operator {type(node.op).__name__}")
        _check(node.operand, names, used, text)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise refuse(f"calling {ast.unparse(node.func)}")
        if node.keywords:
            raise refuse("a keyword argument")
        arity = FUNCTIONS[node.func.id][1]
        if (arity is None and not node.args) or (arity is not None and len(node.args) != arity):
            want = "at least one argument" if arity is None else f"{arity} argument"
            raise GraderError(PARAM, f"{text!r}: {node.func.id} takes {want}, got {len(node.args)}")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise refuse("*arguments")
            _check(arg, names, used, text)
    else:
        raise refuse(type(node).__name__)


def _evaluate(node: ast.expr, scores: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)  # _check allowed nothing else
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(scores[node.id])
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, scores), _evaluate(node.right, scores)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"an exponent of {right} is beyond {MAX_EXPONENT}")
        result = BINARY[type(node.op)](left, right)
        if isinstance(result, complex):  # a negative base to a fractional power
            raise ValueError(f"{left} ^ {right} is not a real number")
        return result
    if isinstance(node, ast.UnaryOp):
        return UNARY[type(node.op)](_evaluate(node.operand, scores))
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)  # _check allowed nothing else
        return float(FUNCTIONS[node.func.id][0](*(_evaluate(a, scores) for a in node.args)))
    raise AssertionError(f"unchecked node {type(node).__name__}")
