"""A small instant-vector PromQL evaluator for alert expressions over hand-written sample series.

promtool is not installable here; the expressions are parsed by `promql-parser` (PyPI, the GreptimeDB parser) and
evaluated with Prometheus' semantics for the subset our alerts use: selectors with =, !=, =~, !~ matchers;
number literals; parentheses; comparison filters; arithmetic between vectors and scalars with one-to-one label
matching (metric name dropped); `and` / `or` / `unless` with `on (...)` / `ignoring (...)`; and the `sum`, `max`,
`min`, `count` aggregations with `by` / `without`. Anything else raises NotImplementedError, so a test never
silently evaluates an expression it does not understand. An alert "fires" when its expression returns a sample
(the `for:` duration is taken as already elapsed: the sample series stand for a steady state).
"""

from __future__ import annotations

import operator
import re
from typing import Callable, Union

import promql_parser

Labels = dict[str, str]
Sample = tuple[Labels, float]
Value = Union[float, list[Sample]]

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le,
}
ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": lambda a, b: a / b if b else float("inf"),
}
AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {"sum": sum, "max": max, "min": min, "count": len}


def sample(name: str, value: float, **labels: str) -> Sample:
    return {"__name__": name, **labels}, float(value)


def evaluate(expr: str, series: list[Sample]) -> list[Sample]:
    result = _eval(promql_parser.parse(expr), series)
    if isinstance(result, float):
        raise NotImplementedError("scalar result")
    return result


def fires(expr: str, series: list[Sample]) -> bool:
    return bool(evaluate(expr, series))


def _matches(matcher: object, labels: Labels) -> bool:
    name, op, want = matcher.name, str(matcher.op), matcher.value  # type: ignore[attr-defined]
    have = labels.get(name, "")
    if op == "MatchOp.Equal":
        return have == want
    if op == "MatchOp.NotEqual":
        return have != want
    if op == "MatchOp.Re":
        return re.fullmatch(want, have) is not None
    if op == "MatchOp.NotRe":
        return re.fullmatch(want, have) is None
    raise NotImplementedError(op)


def _key(labels: Labels, names: list[str] | None, on: bool) -> tuple[tuple[str, str], ...]:
    if names is None:  # default matching: every label but the metric name
        return tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))
    if on:
        return tuple(sorted((k, labels.get(k, "")) for k in names))
    return tuple(sorted((k, v) for k, v in labels.items() if k != "__name__" and k not in names))


def _matching(modifier: object) -> tuple[list[str] | None, bool]:
    matching = getattr(modifier, "matching", None) if modifier is not None else None
    if matching is None:
        return None, True
    kind = str(matching.type)
    if kind.endswith("Include"):  # on (...)
        return list(matching.labels), True
    if kind.endswith("Exclude"):  # ignoring (...)
        return list(matching.labels), False
    raise NotImplementedError(kind)


def _drop_name(labels: Labels) -> Labels:
    return {k: v for k, v in labels.items() if k != "__name__"}


def _eval(node: object, series: list[Sample]) -> Value:
    if isinstance(node, promql_parser.NumberLiteral):
        return float(node.val)
    if isinstance(node, promql_parser.ParenExpr):
        return _eval(node.expr, series)
    if isinstance(node, promql_parser.VectorSelector):
        if node.offset is not None or node.at is not None:
            raise NotImplementedError("offset/@")
        matchers = list(node.matchers.matchers)
        if node.matchers.or_matchers:
            raise NotImplementedError("or matchers")
        return [(dict(lbl), v) for lbl, v in series
                if (node.name is None or lbl.get("__name__") == node.name) and all(_matches(m, lbl) for m in matchers)]
    if isinstance(node, promql_parser.AggregateExpr):
        op = str(node.op)
        if op not in AGGREGATIONS or node.param is not None:
            raise NotImplementedError(op)
        inner = _eval(node.expr, series)
        if isinstance(inner, float):
            raise NotImplementedError("aggregate of scalar")
        by = node.modifier is None or "By" in str(node.modifier.type)
        names = list(node.modifier.labels) if node.modifier is not None else []
        groups: dict[tuple[tuple[str, str], ...], list[float]] = {}
        for lbl, v in inner:
            key = tuple(sorted((k, lbl.get(k, "")) for k in names)) if by else \
                tuple(sorted((k, x) for k, x in lbl.items() if k not in names and k != "__name__"))
            groups.setdefault(key, []).append(v)
        return [({k: x for k, x in key if x != ""}, float(AGGREGATIONS[op](vals))) for key, vals in groups.items()]
    if isinstance(node, promql_parser.BinaryExpr):
        return _binary(node, series)
    raise NotImplementedError(type(node).__name__)


def _binary(node: promql_parser.BinaryExpr, series: list[Sample]) -> Value:
    op = str(node.op)
    lhs, rhs = _eval(node.lhs, series), _eval(node.rhs, series)
    names, on = _matching(node.modifier)
    if node.modifier is not None and node.modifier.return_bool:
        raise NotImplementedError("bool modifier")
    if op in ("and", "or", "unless"):
        if isinstance(lhs, float) or isinstance(rhs, float):
            raise NotImplementedError("set operation on a scalar")
        right_keys = {_key(lbl, names, on) for lbl, _ in rhs}
        if op == "and":
            return [s for s in lhs if _key(s[0], names, on) in right_keys]
        if op == "unless":
            return [s for s in lhs if _key(s[0], names, on) not in right_keys]
        left_keys = {_key(lbl, names, on) for lbl, _ in lhs}
        return [*lhs, *(s for s in rhs if _key(s[0], names, on) not in left_keys)]
    if op in COMPARISONS:
        test = COMPARISONS[op]
        if isinstance(lhs, float) and isinstance(rhs, float):
            raise NotImplementedError("scalar comparison without bool")
        if isinstance(rhs, float):
            return [s for s in lhs if test(s[1], rhs)]  # type: ignore[union-attr]
        if isinstance(lhs, float):
            return [s for s in rhs if test(lhs, s[1])]
        right = {_key(lbl, names, on): v for lbl, v in rhs}
        return [s for s in lhs if (k := _key(s[0], names, on)) in right and test(s[1], right[k])]
    if op in ARITHMETIC:
        fn = ARITHMETIC[op]
        if isinstance(lhs, float) and isinstance(rhs, float):
            return fn(lhs, rhs)
        if isinstance(rhs, float):
            return [(_drop_name(lbl), fn(v, rhs)) for lbl, v in lhs]  # type: ignore[union-attr]
        if isinstance(lhs, float):
            return [(_drop_name(lbl), fn(lhs, v)) for lbl, v in rhs]
        right = {_key(lbl, names, on): v for lbl, v in rhs}
        return [(_drop_name(lbl), fn(v, right[k])) for lbl, v in lhs if (k := _key(lbl, names, on)) in right]
    raise NotImplementedError(op)
