"""Rule sets from YAML: located parsing, CEL compilation and type checking, validation, tests, hot reload.

Every problem is reported as ``file:line: message`` and all problems of a rule set are reported at
once. Conditions are CEL, parsed and run by cel-python (``celpy``); the static checker below walks
celpy's own syntax tree against the documented facts object, because celpy checks types only at run
time and a district must learn of a typo when it saves the file, not when a child is referred.
"""

from __future__ import annotations

import ast as pyast
import difflib
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import celpy
import lark
import yaml
from celpy import celtypes
from pydantic import ValidationError

from hub.domain.calendar import WorkCalendar, due
from hub.domain.directory import CHINA_TZ, TOWN_SCOPED, Directory
from hub.domain.error import InvalidInput
from hub.domain.routing import (
    DATA_CATEGORIES,
    FACT_FIELDS,
    FACTS_BY_NAME,
    LEGAL_BASES,
    PRIORITIES,
    PURPOSES,
    ROLES,
    ConditionError,
    Deadline,
    EscalationSpec,
    FactField,
    Match,
    Origin,
    RecipientSpec,
    RouteAction,
    RoutingDecision,
    Rule,
    RuleFacts,
    RuleSet,
    Sla,
    decide,
    find_shadowed,
    rule_facts,
    vocabulary,
)
from hub.services.port import PlannedRoute, RoutingPlan
from schemas.envelope import ReferralFacts

# ---------------------------------------------------------------------------------------------------
# Issues


@dataclass(frozen=True, slots=True)
class RuleIssue:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class RuleSetInvalid(InvalidInput):
    """The rule set (or directory) has problems; ``issues`` lists every one with its file and line."""

    def __init__(self, issues: Sequence[RuleIssue], code: str = "ruleset-invalid") -> None:
        self.issues = list(issues)
        first = str(self.issues[0]) if self.issues else "invalid rule set"
        more = f" (+{len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        super().__init__(
            f"{first}{more}",
            details=[{"file": i.file, "line": i.line, "message": i.message} for i in self.issues],
            code=code,
        )


# ---------------------------------------------------------------------------------------------------
# YAML with line numbers


@dataclass
class YNode:
    line: int  # 1-based


@dataclass
class YScalar(YNode):
    value: Any
    style: str | None = None


@dataclass
class YMap(YNode):
    items: dict[str, tuple[int, YNode]] = field(default_factory=dict)


@dataclass
class YSeq(YNode):
    items: list[YNode] = field(default_factory=list)


# libyaml keeps the same marks (line numbers) and parses a 10,000-rule file several times faster.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_located(text: str, file: str) -> tuple[YNode | None, list[RuleIssue]]:
    """Parse one YAML document keeping the line of every key and value; duplicate keys are errors."""
    issues: list[RuleIssue] = []
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            return None, [RuleIssue(file, line, f"YAML syntax error: {exc.problem or exc.context}")]
        if root is None:
            return None, []

        def convert(node: yaml.Node) -> YNode:
            line = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                out = YMap(line)
                for key_node, value_node in node.value:
                    key_line = key_node.start_mark.line + 1
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        issues.append(RuleIssue(file, key_line, "YAML merge keys (<<) are not supported"))
                        continue
                    key = loader.construct_object(key_node, deep=True)
                    if not isinstance(key, str):
                        issues.append(RuleIssue(file, key_line, f"keys must be text, got {key!r}"))
                        continue
                    if key in out.items:
                        first = out.items[key][0]
                        issues.append(
                            RuleIssue(file, key_line, f"duplicate key '{key}' (first at line {first})")
                        )
                        continue
                    out.items[key] = (key_line, convert(value_node))
                return out
            if isinstance(node, yaml.SequenceNode):
                return YSeq(line, [convert(n) for n in node.value])
            assert isinstance(node, yaml.ScalarNode)
            return YScalar(line, loader.construct_object(node, deep=True), node.style)

        try:
            return convert(root), issues
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark
            return None, [RuleIssue(file, mark.line + 1 if mark else 1, f"YAML error: {exc.problem}")]
    finally:
        loader.dispose()


def plain(node: YNode | None) -> Any:
    """Drop the line numbers."""
    if isinstance(node, YMap):
        return {k: plain(v) for k, (_, v) in node.items.items()}
    if isinstance(node, YSeq):
        return [plain(v) for v in node.items]
    if isinstance(node, YScalar):
        return node.value
    return None


class Reader:
    """Collects issues for one file while walking located YAML against an expected shape."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[RuleIssue] = []

    def fail(self, line: int, message: str) -> None:
        self.issues.append(RuleIssue(self.file, line, message))

    def mapping(
        self, node: YNode, what: str, allowed: Iterable[str], required: Iterable[str] = ()
    ) -> YMap | None:
        if not isinstance(node, YMap):
            self.fail(node.line, f"{what} must be a mapping")
            return None
        allowed = list(allowed)
        for key, (line, _) in node.items.items():
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.fail(line, f"unknown field '{key}' in {what}{suggestion}; allowed: {', '.join(allowed)}")
        for key in required:
            if key not in node.items:
                self.fail(node.line, f"{what} needs '{key}'")
        return node

    def seq(self, node: YNode, what: str) -> list[YNode]:
        if isinstance(node, YSeq):
            return node.items
        self.fail(node.line, f"{what} must be a list")
        return []

    def text(self, node: YNode, what: str) -> str | None:
        if isinstance(node, YScalar) and isinstance(node.value, str) and node.value.strip():
            return node.value
        self.fail(node.line, f"{what} must be non-empty text")
        return None

    def integer(self, node: YNode, what: str) -> int | None:
        if isinstance(node, YScalar) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return node.value
        self.fail(node.line, f"{what} must be an integer")
        return None

    def boolean(self, node: YNode, what: str) -> bool | None:
        if isinstance(node, YScalar) and isinstance(node.value, bool):
            return node.value
        self.fail(node.line, f"{what} must be true or false")
        return None

    def code(self, node: YNode, what: str, codes: Iterable[str], system: str) -> str | None:
        value = self.text(node, what)
        if value is None:
            return None
        codes = list(codes)
        if value not in codes:
            hint = difflib.get_close_matches(value, codes, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            self.fail(node.line, f"unknown {system} code '{value}' in {what}{suggestion}")
            return None
        return value

    def bilingual(self, node: YNode, what: str) -> dict[str, str]:
        if isinstance(node, YScalar) and isinstance(node.value, str):
            return {"zh": node.value, "en": node.value}
        m = self.mapping(node, what, ("zh", "en"), ("zh", "en"))
        if m is None:
            return {}
        return {k: str(plain(v)) for k, (_, v) in m.items.items()}


# ---------------------------------------------------------------------------------------------------
# CEL: static checking on celpy's syntax tree


@dataclass(frozen=True)
class CT:
    """A CEL type as the checker sees it; ``codes``/``lit`` let it check code literals."""

    kind: str  # bool int uint double string bytes null dyn list map type
    elem: CT | None = None
    codes: str | None = None
    lit: tuple[str, ...] | None = None
    nullable: bool = False

    def __str__(self) -> str:
        if self.kind == "list":
            return f"list<{self.elem}>"
        if self.kind == "map":
            return f"map<string, {self.elem}>"
        return self.kind


BOOL, INT, UINT, DOUBLE, STRING, BYTES = (
    CT("bool"),
    CT("int"),
    CT("uint"),
    CT("double"),
    CT("string"),
    CT("bytes"),
)
NULL, DYN, TYPE = CT("null"), CT("dyn"), CT("type")
NUMERIC = {"int", "uint", "double"}
ORDERED = NUMERIC | {"string", "bytes"}
SIZED = {"string", "bytes", "list", "map"}
STRING_METHODS = {"startsWith", "endsWith", "contains", "matches"}
MACROS = {"all", "exists", "exists_one", "filter", "map"}
CONVERSIONS = {"int": INT, "uint": UINT, "double": DOUBLE, "string": STRING, "bool": BOOL}


def fact_type(f: FactField) -> CT:
    if f.type == "list<string>":
        return CT("list", elem=CT("string", codes=f.codes))
    base = {"string": STRING, "int": INT, "bool": BOOL}[f.type]
    return CT(base.kind, codes=f.codes, nullable=f.nullable)


@dataclass
class CheckError:
    line: int  # 1-based line inside the expression
    column: int
    message: str


class CelChecker:
    """Infers the type of a parsed CEL expression against the facts object; collects every error found."""

    def __init__(self, fields: Mapping[str, FactField], vocab: Mapping[str, frozenset[str]]) -> None:
        self.facts = {name: fact_type(f) for name, f in fields.items()}
        self.vocab = vocab

    def check(self, tree: lark.Tree) -> tuple[CT, list[CheckError], frozenset[str]]:
        self.errors: list[CheckError] = []
        self.used: set[str] = set()
        result = self._t(tree, {})
        if result.kind not in ("bool", "dyn"):
            line, col = _pos(tree)
            self.errors.append(CheckError(line, col, f"the condition must be a bool, it is {result}"))
        return result, self.errors, frozenset(self.used)

    # -- helpers
    def _err(self, node: lark.Tree | lark.Token, message: str) -> CT:
        line, col = _pos(node)
        self.errors.append(CheckError(line, col, message))
        return DYN

    def _codes(self, node: lark.Tree, coded: CT, other: CT) -> None:
        system = coded.codes
        if system is None or other.lit is None or system not in self.vocab:
            return
        known = self.vocab[system]
        for value in other.lit:
            if value not in known:
                hint = difflib.get_close_matches(value, sorted(known), n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                self._err(node, f"unknown {system} code '{value}'{suggestion}")

    def _comparable(self, node: lark.Tree, a: CT, b: CT, op: str) -> None:
        if "dyn" in (a.kind, b.kind):
            return
        if a.kind == "null" or b.kind == "null":
            other = b if a.kind == "null" else a
            if other.kind != "null" and not other.nullable and other.kind not in ("map", "list"):
                self._err(node, f"'{op}' compares {other} with null, but it is never null")
            return
        if a.kind != b.kind:
            self._err(node, f"'{op}' cannot compare {a} with {b}")
            return
        if a.kind == "list" and a.elem and b.elem:
            self._comparable(node, a.elem, b.elem, op)
        self._codes(node, a, b)
        self._codes(node, b, a)

    def _same_numeric(self, node: lark.Tree, a: CT, b: CT, op: str) -> CT:
        if "dyn" in (a.kind, b.kind):
            return a if b.kind == "dyn" else b
        if a.kind not in NUMERIC or a.kind != b.kind:
            return self._err(node, f"'{op}' needs two numbers of the same type, got {a} and {b}")
        return CT(a.kind)

    # -- the walk
    def _t(self, node: lark.Tree | lark.Token, scope: Mapping[str, CT]) -> CT:
        if isinstance(node, lark.Token):
            return self._err(node, f"unexpected token {node!s}")
        data = node.data
        kids = node.children
        if data in ("expr",):
            if len(kids) == 1:
                return self._t(kids[0], scope)
            cond, a, b = (self._t(k, scope) for k in kids)
            if cond.kind not in ("bool", "dyn"):
                self._err(kids[0], f"'?:' needs a bool condition, got {cond}")
            if a.kind != b.kind and "dyn" not in (a.kind, b.kind) and "null" not in (a.kind, b.kind):
                self._err(node, f"'?:' branches differ: {a} and {b}")
            return a if a.kind != "null" else b
        if data in ("conditionalor", "conditionaland"):
            if len(kids) == 1:
                return self._t(kids[0], scope)
            op = "||" if data == "conditionalor" else "&&"
            for k in kids:
                t = self._t(k, scope)
                if t.kind not in ("bool", "dyn"):
                    self._err(k, f"'{op}' needs bool operands, got {t}")
            return BOOL
        if data == "relation":
            if len(kids) == 1:
                return self._t(kids[0], scope)
            op_node, right_node = kids
            assert isinstance(op_node, lark.Tree)
            op = op_node.data.removeprefix("relation_")
            left = self._t(op_node.children[0], scope)
            right = self._t(right_node, scope)
            symbol = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=", "in": "in"}[op]
            if op in ("eq", "ne"):
                self._comparable(node, left, right, symbol)
            elif op == "in":
                if right.kind in ("list", "map") and right.elem is not None:
                    target = right.elem if right.kind == "list" else STRING
                    self._comparable(node, left, target, symbol)
                elif right.kind != "dyn":
                    self._err(node, f"'in' needs a list or map on the right, got {right}")
            elif "dyn" not in (left.kind, right.kind) and (
                left.kind not in ORDERED or left.kind != right.kind
            ):
                self._err(node, f"'{symbol}' cannot order {left} and {right}")
            return BOOL
        if data in ("addition", "multiplication"):
            if len(kids) == 1:
                return self._t(kids[0], scope)
            op_node, right_node = kids
            assert isinstance(op_node, lark.Tree)
            op = op_node.data.split("_", 1)[1]
            left = self._t(op_node.children[0], scope)
            right = self._t(right_node, scope)
            symbol = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%"}[op]
            if op == "add" and left.kind == right.kind and left.kind in ("string", "bytes", "list"):
                return CT(left.kind, elem=left.elem)
            if op == "mod" and "double" in (left.kind, right.kind):
                return self._err(node, "'%' is not defined on double")
            return self._same_numeric(node, left, right, symbol)
        if data == "unary":
            if len(kids) == 1:
                return self._t(kids[0], scope)
            op_node, operand = kids
            t = self._t(operand, scope)
            assert isinstance(op_node, lark.Tree)
            if op_node.data == "unary_not":
                if t.kind not in ("bool", "dyn"):
                    self._err(node, f"'!' needs a bool, got {t}")
                return BOOL
            if t.kind not in NUMERIC and t.kind != "dyn":
                self._err(node, f"'-' needs a number, got {t}")
            return CT(t.kind)
        if data in ("member", "primary", "paren_expr"):
            return self._t(kids[0], scope)
        if data == "member_dot":
            base = self._t(kids[0], scope)
            name = str(kids[1])
            if base.kind == "map":
                return base.elem or DYN
            if base.kind == "dyn":
                return DYN
            return self._err(kids[1], f"{base} has no field '{name}' (the facts object is flat)")
        if data == "member_dot_arg":
            return self._method(node, scope)
        if data == "member_index":
            base = self._t(kids[0], scope)
            index = self._t(kids[1], scope)
            if base.kind == "list":
                if index.kind not in ("int", "dyn"):
                    self._err(kids[1], f"a list index must be int, got {index}")
                return base.elem or DYN
            if base.kind in ("map", "dyn"):
                return (base.elem or DYN) if base.kind == "map" else DYN
            return self._err(node, f"cannot index {base}")
        if data == "member_object":
            return self._err(node, "message construction is not supported in rule conditions")
        if data == "literal":
            return self._literal(kids[0])
        if data == "ident":
            name = str(kids[0])
            if name in scope:
                return scope[name]
            if name in self.facts:
                self.used.add(name)
                return self.facts[name]
            hint = difflib.get_close_matches(name, list(self.facts), n=1, cutoff=0.5)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            return self._err(kids[0], f"unknown field '{name}'{suggestion}")
        if data == "ident_arg":
            return self._function(node, scope)
        if data in ("dot_ident", "dot_ident_arg"):
            return self._err(node, "leading-dot names are not supported in rule conditions")
        if data == "list_lit":
            if not kids:
                return CT("list", elem=DYN)
            elems = [self._t(k, scope) for k in _exprs(kids[0])]
            kinds = {e.kind for e in elems} - {"dyn"}
            if len(kinds) > 1:
                self._err(node, f"list elements differ in type: {', '.join(sorted(kinds))}")
                return CT("list", elem=DYN)
            lits = [v for e in elems for v in (e.lit or ())]
            lit = tuple(lits) if all(e.lit is not None for e in elems) else None
            kind = kinds.pop() if kinds else "dyn"
            return CT("list", elem=CT(kind, lit=lit))
        if data == "map_lit":
            if kids:
                for k in _exprs(kids[0]):
                    self._t(k, scope)
            return CT("map", elem=DYN)
        return self._err(node, f"unsupported construct '{data}'")

    def _literal(self, token: lark.Tree | lark.Token) -> CT:
        assert isinstance(token, lark.Token)
        kind = token.type
        if kind == "INT_LIT":
            return INT
        if kind == "UINT_LIT":
            return UINT
        if kind == "FLOAT_LIT":
            return DOUBLE
        if kind in ("STRING_LIT", "MLSTRING_LIT"):
            return CT("string", lit=(_string_value(str(token)),))
        if kind == "BYTES_LIT":
            return BYTES
        if kind == "BOOL_LIT":
            return BOOL
        if kind == "NULL_LIT":
            return NULL
        return self._err(token, f"unsupported literal {token!s}")

    def _function(self, node: lark.Tree, scope: Mapping[str, CT]) -> CT:
        name = str(node.children[0])
        args = _exprs(node.children[1]) if len(node.children) > 1 else []
        if name == "has":
            if len(args) != 1 or _unwrap(args[0]).data != "member_dot":
                return self._err(node, "has() needs a field selection such as has(m.f)")
            self._t(args[0], scope)
            return BOOL
        types = [self._t(a, scope) for a in args]
        if name == "size":
            if len(types) != 1 or types[0].kind not in SIZED | {"dyn"}:
                self._err(
                    node, f"size() needs one string, bytes, list or map, got {', '.join(map(str, types))}"
                )
            return INT
        if name in CONVERSIONS:
            if len(types) != 1:
                self._err(node, f"{name}() needs one argument")
            return CONVERSIONS[name]
        if name == "dyn":
            return DYN
        if name == "type":
            return TYPE
        return self._err(node, f"unknown function '{name}'")

    def _method(self, node: lark.Tree, scope: Mapping[str, CT]) -> CT:
        receiver_node, name_token = node.children[0], node.children[1]
        name = str(name_token)
        args = _exprs(node.children[2]) if len(node.children) > 2 else []
        receiver = self._t(receiver_node, scope)
        if name in MACROS:
            if receiver.kind not in ("list", "map", "dyn"):
                return self._err(node, f"{name}() needs a list, got {receiver}")
            if len(args) != 2:
                return self._err(node, f"{name}() takes a variable and an expression")
            var = _ident_name(args[0])
            if var is None:
                return self._err(args[0], f"the first argument of {name}() must be a variable name")
            elem = (
                (receiver.elem or DYN)
                if receiver.kind == "list"
                else (STRING if receiver.kind == "map" else DYN)
            )
            body = self._t(args[1], {**scope, var: elem})
            if name == "map":
                return CT("list", elem=CT(body.kind, elem=body.elem))
            if body.kind not in ("bool", "dyn"):
                self._err(args[1], f"the predicate of {name}() must be a bool, got {body}")
            return CT("list", elem=elem) if name == "filter" else BOOL
        types = [self._t(a, scope) for a in args]
        if name == "size" and not args:
            if receiver.kind not in SIZED | {"dyn"}:
                self._err(node, f"size() needs a string, bytes, list or map, got {receiver}")
            return INT
        if name in STRING_METHODS:
            if receiver.kind not in ("string", "dyn"):
                self._err(node, f"{name}() needs a string receiver, got {receiver}")
            if len(types) != 1 or types[0].kind not in ("string", "dyn"):
                self._err(node, f"{name}() needs one string argument")
            return BOOL
        return self._err(name_token, f"unknown function '{name}'")


def _exprs(exprlist: lark.Tree | lark.Token) -> list[lark.Tree]:
    assert isinstance(exprlist, lark.Tree)
    return [c for c in exprlist.children if isinstance(c, lark.Tree)]


_WRAPPERS = frozenset(
    {
        "expr",
        "conditionalor",
        "conditionaland",
        "relation",
        "addition",
        "multiplication",
        "unary",
        "member",
        "primary",
    }
)


def _unwrap(node: lark.Tree) -> lark.Tree:
    """Descend single-child wrappers (expr → conditionalor → … → member) to the first real construct."""
    while (
        node.data in _WRAPPERS
        and len(node.children) == 1
        and isinstance(node.children[0], lark.Tree)
    ):  # fmt: skip
        node = node.children[0]
    return node


def _ident_name(node: lark.Tree) -> str | None:
    inner = _unwrap(node)
    if inner.data == "ident":
        return str(inner.children[0])
    return None


def _pos(node: lark.Tree | lark.Token) -> tuple[int, int]:
    if isinstance(node, lark.Token):
        return node.line or 1, node.column or 1
    meta = node.meta
    if not getattr(meta, "empty", True):
        return meta.line, meta.column
    for child in node.children:
        if isinstance(child, lark.Tree | lark.Token):
            return _pos(child)
    return 1, 1


def _string_value(token: str) -> str:
    raw = token[1:] if token[:1] in "rR" else token
    try:
        value = pyast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw.strip("'\"")
    return value if isinstance(value, str) else str(value)


# ---------------------------------------------------------------------------------------------------
# CEL: compiled conditions


class _DropCelInternalErrors(logging.Filter):
    """celpy logs every evaluation error; ours are reported in the decision's explanation instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Internal error")


def _to_cel(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, tuple | list):
        return celtypes.ListType([_to_cel(v) for v in value])
    raise TypeError(f"no CEL value for {type(value).__name__}")


class CelCondition:
    """A ``when:`` expression compiled once by celpy; evaluation results memoised per distinct input.

    CEL is side-effect free and a condition reads only the facts it names (found by the checker), so
    the result for the same values of those facts never changes: a small bounded memo turns celpy's
    ~25-200 µs per evaluation into a dictionary lookup for the repeats that dominate real traffic.
    Not thread-safe (celpy's compiled runner shares module globals); each worker process owns its set.
    """

    __slots__ = ("_cache", "_cache_size", "_fields", "_program", "fields", "source")

    def __init__(
        self, source: str, program: celpy.Runner, fields: frozenset[str], cache_size: int = 4096
    ) -> None:
        self.source = source
        self.fields = fields
        self._fields = tuple(sorted(fields))
        self._program = program
        self._cache: dict[tuple[Any, ...], tuple[bool, Any]] = {}
        self._cache_size = cache_size

    def set_memo(self, size: int) -> None:
        """Resize (0: disable) the result memo; benchmarks use it to measure celpy itself."""
        self._cache_size = size
        self._cache.clear()

    def evaluate(self, facts: Mapping[str, Any]) -> bool:
        key = tuple(facts.get(f) for f in self._fields)
        hit: tuple[bool, Any] | None = self._cache.get(key) if self._cache_size else None
        if hit is None:
            hit = self._run(key)
            if self._cache_size:
                if len(self._cache) >= self._cache_size:
                    self._cache.clear()
                self._cache[key] = hit
        ok, value = hit
        if not ok:
            raise ConditionError(value)
        return bool(value)

    def _run(self, key: tuple[Any, ...]) -> tuple[bool, Any]:
        context = {f: _to_cel(v) for f, v in zip(self._fields, key, strict=True)}
        try:
            value = self._program.evaluate(context)
        except celpy.CELEvalError as exc:
            return False, _cel_error_text(exc)
        if not isinstance(value, celtypes.BoolType | bool):
            return False, f"the condition gave {type(value).__name__}, not a bool"
        return True, bool(value)

    def __repr__(self) -> str:
        return f"CelCondition({self.source!r})"


def _cel_error_text(exc: celpy.CELEvalError) -> str:
    # CELEvalError nests: ('evaluation error', type, (message, type, (detail,)))
    parts: list[str] = []
    args: Any = exc.args
    while isinstance(args, tuple) and args:
        head = args[0]
        if isinstance(head, str) and head != "evaluation error":
            parts.append(head)
        args = args[2] if len(args) > 2 else None
    text = parts[-1] if parts else str(exc)
    return text.replace("celpy.celtypes.", "").replace("<class '", "").replace("'>", "")


class CelCompiler:
    """Compiles and type-checks rule conditions against the facts object and the directory's codes."""

    def __init__(self, directory: Directory, cache_size: int = 4096) -> None:
        self.env = celpy.Environment(runner_class=celpy.CompiledRunner)
        self.checker = CelChecker(FACTS_BY_NAME, vocabulary(directory))
        self.cache_size = cache_size
        transpiler_log = logging.getLogger("celpy.Transpiler")
        if not any(isinstance(f, _DropCelInternalErrors) for f in transpiler_log.filters):
            transpiler_log.addFilter(_DropCelInternalErrors())

    def compile(self, source: str) -> tuple[CelCondition | None, list[CheckError]]:
        try:
            tree = self.env.compile(source)
        except celpy.CELParseError as exc:
            line = exc.line or 1
            column = exc.column or 1
            cause = exc.__context__
            if isinstance(cause, lark.exceptions.UnexpectedToken):
                what = f"unexpected '{cause.token}'"
            elif isinstance(cause, lark.exceptions.UnexpectedCharacters):
                what = f"unexpected character {source.splitlines()[line - 1][column - 1 : column]!r}"
            elif isinstance(cause, lark.exceptions.UnexpectedEOF):
                what = "the expression ends too early"
            else:
                what = "syntax error"
            return None, [CheckError(line, column, f"CEL syntax error at column {column}: {what}")]
        _, errors, used = self.checker.check(tree)
        if errors:
            return None, errors
        try:
            program = self.env.program(tree)
        except Exception as exc:  # celpy raises plain Python errors while transpiling
            return None, [CheckError(1, 1, f"CEL cannot compile this expression: {exc}")]
        return CelCondition(source, program, used, self.cache_size), []


# ---------------------------------------------------------------------------------------------------
# Loading rule sets

FILE_KEYS = ("description", "rules", "fallback")
RULE_KEYS = ("id", "description", "priority", "pathway", "match", "when", "routes", "stop")
ROUTE_KEYS = ("to", "role", "purpose", "legal_basis", "priority", "sla", "escalation", "categories", "queue")
FALLBACK_KEYS = ("to", "purpose", "legal_basis", "priority", "sla", "escalation", "categories", "queue")
SLA_KEYS = ("acknowledge", "decide", "first_contact")
RECIPIENT_KEYS = ("agency", "org", "on_duty")
ESCALATION_KEYS = ("agency", "org", "role")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


def rule_files(rules_dir: Path) -> list[Path]:
    """The rule files of a rule-set directory: its own ``*.yaml``/``*.yml``, not sub-directories."""
    return sorted(p for p in rules_dir.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))


class _Builder:
    def __init__(self, directory: Directory, compiler: CelCompiler) -> None:
        self.directory = directory
        self.compiler = compiler
        self.vocab = vocabulary(directory)
        self.issues: list[RuleIssue] = []
        self.rules: list[Rule] = []
        self.seen: dict[str, Origin] = {}
        self.fallback: tuple[RouteAction, Origin] | None = None

    def add_file(self, file: str, text: str) -> None:
        root, issues = parse_located(text, file)
        self.issues.extend(issues)
        if root is None:
            if not issues:
                self.issues.append(RuleIssue(file, 1, "the file is empty"))
            return
        r = Reader(file)
        top = r.mapping(root, "a rule file", FILE_KEYS)
        if top is not None:
            if "description" in top.items:
                r.bilingual(top.items["description"][1], "description")
            if "fallback" in top.items:
                line, node = top.items["fallback"]
                if self.fallback is not None:
                    r.fail(line, f"a second fallback (the first is at {self.fallback[1]})")
                else:
                    action = self._action(r, node, "fallback", FALLBACK_KEYS, fallback=True)
                    if action is not None:
                        self.fallback = (action, Origin(file, line))
            if "rules" in top.items:
                for node in r.seq(top.items["rules"][1], "rules"):
                    rule = self._rule(r, node)
                    if rule is not None:
                        self.rules.append(rule)
        self.issues.extend(r.issues)

    def _rule(self, r: Reader, node: YNode) -> Rule | None:
        m = r.mapping(node, "a rule", RULE_KEYS, ("id", "routes"))
        if m is None:
            return None
        before = len(r.issues)
        origin = Origin(r.file, m.line)
        rule_id = r.text(m.items["id"][1], "id") if "id" in m.items else None
        if rule_id is not None:
            if not _ID.match(rule_id):
                r.fail(
                    m.items["id"][1].line, f"rule id '{rule_id}' must be lower-case letters, digits and '-'"
                )
            elif rule_id in self.seen:
                r.fail(
                    m.items["id"][1].line, f"duplicate rule id '{rule_id}' (first at {self.seen[rule_id]})"
                )
            else:
                self.seen[rule_id] = origin
        what = f"rule '{rule_id}'" if rule_id else "a rule"
        description = (
            r.bilingual(m.items["description"][1], "description") if "description" in m.items else {}
        )
        priority = r.integer(m.items["priority"][1], "priority") if "priority" in m.items else 0
        stop = r.boolean(m.items["stop"][1], "stop") if "stop" in m.items else False
        pathway = r.text(m.items["pathway"][1], "pathway") if "pathway" in m.items else None
        match = self._match(r, m.items["match"][1]) if "match" in m.items else Match()
        when = self._when(r, m.items["when"][1]) if "when" in m.items else None
        routes: list[RouteAction] = []
        if "routes" in m.items:
            items = r.seq(m.items["routes"][1], f"routes of {what}")
            if not items and isinstance(m.items["routes"][1], YSeq):
                r.fail(m.items["routes"][1].line, f"{what} has no routes")
            for item in items:
                action = self._action(r, item, f"a route of {what}", ROUTE_KEYS)
                if action is not None:
                    routes.append(action)
        if len(r.issues) > before or rule_id is None or match is None:
            return None
        return Rule(
            id=rule_id,
            routes=tuple(routes),
            priority=priority or 0,
            match=match,
            when=when,
            stop=bool(stop),
            pathway=pathway,
            description=description,
            origin=origin,
        )

    def _match(self, r: Reader, node: YNode) -> Match | None:
        m = r.mapping(node, "match", [f.name for f in FACT_FIELDS])
        if m is None:
            return None
        keys: dict[str, frozenset[Any]] = {}
        for key, (line, value) in m.items.items():
            fact = FACTS_BY_NAME.get(key)
            if fact is None:
                continue
            before = len(r.issues)
            accepted = self._match_values(r, fact, value)
            if accepted is not None:
                if not accepted and len(r.issues) == before:
                    r.fail(line, f"match.{key} accepts no value: the rule can never match")
                keys[key] = accepted
        return Match.of(**keys)

    def _match_values(self, r: Reader, fact: FactField, node: YNode) -> frozenset[Any] | None:
        if fact.type == "bool":
            value = r.boolean(node, f"match.{fact.name}")
            return None if value is None else frozenset({value})
        if fact.type == "int" and isinstance(node, YMap):
            if fact.bounds is None:
                r.fail(node.line, f"match.{fact.name} takes a list of values")
                return None
            rng = r.mapping(node, f"match.{fact.name}", ("min", "max"))
            if rng is None:
                return None
            low, high = fact.bounds
            lo = r.integer(rng.items["min"][1], f"match.{fact.name}.min") if "min" in rng.items else low
            hi = r.integer(rng.items["max"][1], f"match.{fact.name}.max") if "max" in rng.items else high
            if lo is None or hi is None:
                return None
            return frozenset(range(max(lo, low), min(hi, high) + 1))
        items = node.items if isinstance(node, YSeq) else [node]
        out: set[Any] = set()
        for item in items:
            if fact.type == "int":
                v = r.integer(item, f"match.{fact.name}")
                if v is not None:
                    if fact.bounds and not fact.bounds[0] <= v <= fact.bounds[1]:
                        r.fail(
                            item.line,
                            f"match.{fact.name} value {v} is outside {fact.bounds[0]}-{fact.bounds[1]}",
                        )
                    out.add(v)
            elif fact.codes is not None:
                c = r.code(item, f"match.{fact.name}", sorted(self.vocab[fact.codes]), fact.codes)
                if c is not None:
                    out.add(c)
            else:
                t = r.text(item, f"match.{fact.name}")
                if t is not None:
                    out.add(t)
        return frozenset(out)

    def _when(self, r: Reader, node: YNode) -> CelCondition | None:
        source = r.text(node, "when")
        if source is None:
            return None
        condition, errors = self.compiler.compile(source)
        # A literal block (|) starts on the line after the indicator; other styles on the value's line.
        first = node.line + 1 if isinstance(node, YScalar) and node.style == "|" else node.line
        for e in errors:
            line = (
                first + e.line - 1
                if isinstance(node, YScalar) and node.style in ("|", None, "'", '"')
                else first
            )
            r.fail(line, f"when: {e.message}")
        return condition

    def _action(
        self, r: Reader, node: YNode, what: str, keys: Sequence[str], fallback: bool = False
    ) -> RouteAction | None:
        m = r.mapping(node, what, keys, ("to", "purpose", "legal_basis"))
        if m is None:
            return None
        before = len(r.issues)
        to: list[RecipientSpec] = []
        if "to" in m.items:
            to_node = m.items["to"][1]
            for item in to_node.items if isinstance(to_node, YSeq) else [to_node]:
                spec = self._recipient(r, item, fallback)
                if spec is not None:
                    to.append(spec)
        role = "primary"
        if "role" in m.items:
            role = r.code(m.items["role"][1], "role", sorted(ROLES), "role") or "primary"
        purpose = (
            r.code(m.items["purpose"][1], "purpose", sorted(PURPOSES), "purpose")
            if "purpose" in m.items
            else None
        )
        basis = (
            r.code(m.items["legal_basis"][1], "legal_basis", sorted(LEGAL_BASES), "legal-basis")
            if "legal_basis" in m.items
            else None
        )
        priority = "inherit"
        if "priority" in m.items:
            priority = (
                r.code(m.items["priority"][1], "priority", ["inherit", *PRIORITIES], "priority") or "inherit"
            )
        sla = self._sla(r, m.items["sla"][1]) if "sla" in m.items else Sla()
        escalation: list[EscalationSpec] = []
        if "escalation" in m.items:
            for item in r.seq(m.items["escalation"][1], "escalation"):
                step = self._escalation(r, item)
                if step is not None:
                    escalation.append(step)
        categories: tuple[str, ...] | None = None
        if "categories" in m.items:
            cats = [
                r.code(c, "categories", sorted(DATA_CATEGORIES), "data-category")
                for c in r.seq(m.items["categories"][1], "categories")
            ]
            categories = tuple(c for c in cats if c is not None)
        queue = r.text(m.items["queue"][1], "queue") if "queue" in m.items else None
        if queue is not None and to:
            self._check_queue(r, m.items["queue"][1].line, queue, to)
        if len(r.issues) > before or purpose is None or basis is None or not to:
            return None
        return RouteAction(
            to=tuple(to),
            purpose=purpose,
            legal_basis=basis,
            role=role,
            priority=priority,
            sla=sla,
            escalation=tuple(escalation),
            categories=categories,
            queue=queue,
            origin=Origin(r.file, m.line),
        )

    def _recipient(self, r: Reader, node: YNode, fallback: bool) -> RecipientSpec | None:
        m = r.mapping(node, "a recipient (to)", RECIPIENT_KEYS)
        if m is None:
            return None
        if ("agency" in m.items) == ("org" in m.items):
            r.fail(m.line, "a recipient names exactly one of 'agency' or 'org'")
            return None
        on_duty = bool(r.boolean(m.items["on_duty"][1], "on_duty")) if "on_duty" in m.items else False
        if "org" in m.items:
            line = m.items["org"][1].line
            org_id = r.text(m.items["org"][1], "org")
            if org_id is None:
                return None
            org = self.directory.get(org_id)
            if org is None or not org.active:
                hint = difflib.get_close_matches(org_id, [o.id for o in self.directory.organisations], n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                r.fail(
                    line,
                    f"unresolvable recipient: no active organisation '{org_id}' in the directory{suggestion}",
                )
                return None
            return RecipientSpec(org=org_id, on_duty=on_duty)
        line = m.items["agency"][1].line
        agency = r.code(m.items["agency"][1], "agency", sorted(self.vocab["agency-type"]), "agency-type")
        if agency is None:
            return None
        orgs = self.directory.of_type(agency)
        if not orgs:
            r.fail(line, f"unresolvable recipient: the directory has no {agency}")
            return None
        if agency in TOWN_SCOPED:
            if fallback:
                r.fail(line, f"the fallback cannot depend on the student's town ({agency})")
                return None
            served = {t for o in orgs for t in o.towns}
            missing = [t.code for t in self.directory.towns if t.code not in served]
            if missing:
                r.fail(line, f"unresolvable recipient: no {agency} serves town(s) {', '.join(missing)}")
                return None
        elif fallback and agency == "school":
            r.fail(line, "the fallback cannot depend on the student's school")
            return None
        elif agency != "school" and not any(o.district_wide for o in orgs):
            served = {t for o in orgs for t in o.towns}
            missing = [t.code for t in self.directory.towns if t.code not in served]
            if missing:
                r.fail(line, f"unresolvable recipient: no {agency} serves town(s) {', '.join(missing)}")
                return None
        if on_duty and not any(o.on_duty for o in orgs):
            r.fail(line, f"on_duty: no {agency} in the directory has an on-duty calendar")
            return None
        return RecipientSpec(agency=agency, on_duty=on_duty)

    def _check_queue(self, r: Reader, line: int, queue: str, to: Sequence[RecipientSpec]) -> None:
        for spec in to:
            orgs = (
                [self.directory.get(spec.org)]
                if spec.org
                else list(self.directory.of_type(spec.agency or ""))
            )
            if not any(o is not None and queue in o.queues for o in orgs):
                r.fail(line, f"queue '{queue}' is not a queue of {spec}")

    def _escalation(self, r: Reader, node: YNode) -> EscalationSpec | None:
        m = r.mapping(node, "an escalation step", ESCALATION_KEYS)
        if m is None:
            return None
        if len(m.items) != 1:
            r.fail(m.line, "an escalation step names exactly one of 'agency', 'org' or 'role'")
            return None
        key, (line, value) = next(iter(m.items.items()))
        if key == "agency":
            agency = r.code(value, "agency", sorted(self.vocab["agency-type"]), "agency-type")
            if agency is not None and not self.directory.of_type(agency):
                r.fail(line, f"unresolvable escalation: the directory has no {agency}")
                return None
            return EscalationSpec(agency=agency) if agency else None
        if key == "org":
            org_id = r.text(value, "org")
            if org_id is not None and self.directory.get(org_id) is None:
                r.fail(line, f"unresolvable escalation: no organisation '{org_id}' in the directory")
                return None
            return EscalationSpec(org=org_id) if org_id else None
        role = r.text(value, "role")
        return EscalationSpec(role=role) if role else None

    def _sla(self, r: Reader, node: YNode) -> Sla:
        m = r.mapping(node, "sla", SLA_KEYS)
        if m is None:
            return Sla()
        values: dict[str, Deadline] = {}
        for key, (_, value) in m.items.items():
            if key not in SLA_KEYS:
                continue
            raw = plain(value)
            try:
                values[key] = Deadline.parse(str(raw))
            except ValueError as exc:
                r.fail(value.line, f"sla.{key}: {exc}")
        return Sla(**values)

    def finish(self, name: str) -> RuleSet | None:
        if self.fallback is None:
            first = self.rules[0].origin.file if self.rules else "<rules>"
            self.issues.append(RuleIssue(first, 1, "the rule set has no fallback (the no-match outcome)"))
        placeholder = RouteAction(
            to=(RecipientSpec(agency="district-centre"),), purpose="follow-up", legal_basis="consent"
        )
        ruleset = RuleSet.build(self.rules, self.fallback[0] if self.fallback else placeholder, name)
        for shadowed, by in find_shadowed(ruleset.rules):
            self.issues.append(
                RuleIssue(
                    shadowed.origin.file,
                    shadowed.origin.line,
                    f"rule '{shadowed.id}' is shadowed by '{by.id}' ({by.origin}): that rule stops "
                    f"evaluation and matches everything this one can",
                )
            )
        self.issues.sort(key=lambda i: (i.file, i.line))
        return None if self.issues else ruleset


def check_ruleset(
    rules_dir: Path, directory: Directory, *, cache_size: int = 4096
) -> tuple[RuleSet | None, list[RuleIssue]]:
    """Load and validate every rule file of ``rules_dir``: the rule set, or None and all the issues."""
    rules_dir = Path(rules_dir)
    if not rules_dir.is_dir():
        return None, [RuleIssue(str(rules_dir), 0, "not a directory")]
    files = rule_files(rules_dir)
    if not files:
        return None, [RuleIssue(str(rules_dir), 0, "no rule files (*.yaml)")]
    return build_ruleset(
        [(str(p), p.read_text(encoding="utf-8")) for p in files],
        directory,
        name=rules_dir.name,
        cache_size=cache_size,
    )


def build_ruleset(
    sources: Sequence[tuple[str, str]], directory: Directory, *, name: str = "rules", cache_size: int = 4096
) -> tuple[RuleSet | None, list[RuleIssue]]:
    """Build from (file name, YAML text) pairs, in that order."""
    builder = _Builder(directory, CelCompiler(directory, cache_size=cache_size))
    for file, text in sources:
        builder.add_file(file, text)
    ruleset = builder.finish(name)
    return ruleset, builder.issues


def load_ruleset(rules_dir: Path, directory: Directory) -> RuleSet:
    """The valid rule set of ``rules_dir`` or ``RuleSetInvalid`` listing every problem."""
    ruleset, issues = check_ruleset(rules_dir, directory)
    if ruleset is None:
        raise RuleSetInvalid(issues)
    return ruleset


# ---------------------------------------------------------------------------------------------------
# Hot reload


@dataclass(frozen=True)
class ReloadOutcome:
    ok: bool
    version: str  # the version in force after the reload
    previous: str
    issues: tuple[RuleIssue, ...] = ()

    @property
    def changed(self) -> bool:
        return self.version != self.previous


class RuleSetHolder:
    """The rule set a worker routes with; reloads atomically and keeps the last valid set on failure.

    Construction fails (``RuleSetInvalid``) on an invalid set: a worker must not start on one. After
    that, ``reload()`` never throws for a bad file; it reports the issues and keeps routing with the
    set it had. The caller writes the outcome (old and new version hashes) to the audit log.
    """

    def __init__(self, rules_dir: Path, directory: Directory | Callable[[], Directory]) -> None:
        self.rules_dir = Path(rules_dir)
        self._directory = directory
        self._lock = threading.Lock()
        self._fingerprint = self._files_fingerprint()
        self._current = load_ruleset(self.rules_dir, self.directory)

    @property
    def directory(self) -> Directory:
        d = self._directory
        return d() if callable(d) else d

    @property
    def current(self) -> RuleSet:
        return self._current

    @property
    def version(self) -> str:
        return self._current.version

    def reload(self) -> ReloadOutcome:
        with self._lock:
            previous = self._current.version
            fingerprint = self._files_fingerprint()
            ruleset, issues = check_ruleset(self.rules_dir, self.directory)
            if ruleset is None:
                return ReloadOutcome(False, previous, previous, tuple(issues))
            self._current = ruleset
            self._fingerprint = fingerprint
            return ReloadOutcome(True, ruleset.version, previous)

    def reload_if_changed(self) -> ReloadOutcome | None:
        """Cheap poll for workers: reload only when a rule file's bytes changed since the last load."""
        if self._files_fingerprint() == self._fingerprint:
            return None
        return self.reload()

    def _files_fingerprint(self) -> str:
        digest = hashlib.sha256()
        try:
            for path in rule_files(self.rules_dir):
                digest.update(path.name.encode())
                digest.update(path.read_bytes())
        except OSError:
            return ""
        return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------
# The pipeline's Router port


class RulesRouter:
    """The ``Router`` port over the rules engine: rule facts, decision, SLA due times, explanation.

    ``RoutingPlan.matched`` is False whenever the back-stop took the referral (no rule matched, or no
    primary recipient could be resolved): the pipeline writes a dead letter for exactly those.
    """

    def __init__(
        self,
        holder: RuleSetHolder,
        calendar: WorkCalendar,
        explain: Literal["full", "candidates"] = "full",
    ) -> None:
        self.holder = holder
        self.calendar = calendar
        self.explain = explain

    @property
    def version(self) -> str:
        return self.holder.version

    def decide(self, facts: ReferralFacts, now: datetime, declined: Sequence[str] = ()) -> RoutingDecision:
        directory = self.holder.directory
        working = self.calendar.is_working_day(now.astimezone(CHINA_TZ).date())
        rf = rule_facts(facts, now=now, working_day=working, declined_by=declined, directory=directory)
        return decide(rf, self.holder.current, directory, explain=self.explain)

    def plan(self, facts: ReferralFacts, now: datetime, declined: Sequence[str] = ()) -> RoutingPlan:
        decision = self.decide(facts, now, declined)
        routes = [
            PlannedRoute(
                recipient_org=r.recipient,
                recipient_type=r.recipient_type,
                purpose=r.purpose,
                legal_basis=r.legal_basis,
                priority=r.priority,
                rule_id=r.rule_id,
                ack_due=due(now, r.ack, self.calendar) if r.ack else None,
                first_contact_due=due(now, r.first_contact, self.calendar) if r.first_contact else None,
                categories=r.categories or (),
                decide_due=due(now, r.decide, self.calendar) if r.decide else None,
                escalation=tuple(r.escalation),
            )
            for r in decision.routes
        ]
        explanation = [t.as_dict() for t in decision.explanation]
        if decision.notes:
            explanation.append({"rule": "notes", "notes": list(decision.notes)})
        return RoutingPlan(
            routes=routes,
            ruleset_version=decision.ruleset_version,
            explanation=explanation,
            matched=not decision.fallback,
        )


# ---------------------------------------------------------------------------------------------------
# Facts from files, example-based tests


def parse_time(value: Any) -> datetime:
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if at.tzinfo is None:
        raise InvalidInput(f"time {value!s} needs a UTC offset, e.g. +08:00", code="naive-datetime")
    return at


def facts_from_document(
    data: Mapping[str, Any],
    *,
    directory: Directory,
    calendar: WorkCalendar,
    now: datetime | None = None,
    working_day: bool | None = None,
    declined_by: Iterable[str] = (),
) -> RuleFacts:
    """Rule facts from a FHIR referral Bundle or from a facts document (ReferralFacts fields).

    A facts document may also carry the context: ``now`` (ISO time with offset), ``working_day`` and
    ``declined_by``; arguments given here win over the document.
    """
    data = dict(data)
    doc_now = data.pop("now", None)
    doc_working = data.pop("working_day", None)
    doc_declined = data.pop("declined_by", None) or []
    at = now or (parse_time(doc_now) if doc_now is not None else None)
    if data.get("resourceType") == "Bundle":
        # Imported here: fhir.resources is heavy and only this path (explain, tests) needs the profile.
        from schemas.profile import ProfileError, validate_referral

        if at is None:
            stamp = data.get("timestamp")
            at = parse_time(stamp) if stamp else datetime.now().astimezone()
        try:
            referral = validate_referral(data, now=at).facts
        except ProfileError as exc:
            raise InvalidInput(
                f"the Bundle is not a valid referral: {exc}",
                details=[i.as_dict() for i in exc.issues],
                code="bundle-invalid",
            ) from exc
    else:
        try:
            referral = ReferralFacts.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(
                "invalid referral facts: "
                + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
                code="facts-invalid",
            ) from exc
        if at is None:
            raise InvalidInput(
                "the facts need 'now' (the routing time, ISO 8601 with offset)", code="facts-invalid"
            )
    if working_day is None:
        working_day = (
            bool(doc_working)
            if doc_working is not None
            else calendar.is_working_day(at.astimezone(CHINA_TZ).date())
        )
    return rule_facts(
        referral,
        now=at,
        working_day=working_day,
        declined_by=list(declined_by) or list(doc_declined),
        directory=directory,
    )


ROUTE_EXPECT_KEYS = (
    "recipient",
    "role",
    "purpose",
    "legal_basis",
    "priority",
    "ack",
    "decide",
    "first_contact",
    "escalation",
    "queue",
    "categories",
    "fallback",
    "rule_id",
    "pathway_step",
)
CASE_KEYS = ("name", "facts", "bundle", "now", "working_day", "declined_by", "expect")
EXPECT_KEYS = ("matched", "fallback", "rules", "routes")


@dataclass(frozen=True)
class RuleTestCase:
    name: str
    file: str
    line: int
    document: Mapping[str, Any]
    expect: Mapping[str, Any]


@dataclass(frozen=True)
class CaseResult:
    case: RuleTestCase
    passed: bool
    failures: tuple[str, ...]
    decision: Any = None

    def __str__(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'} {self.case.file}:{self.case.line} {self.case.name}"
        return head + "".join(f"\n    {f}" for f in self.failures)


def load_rule_tests(tests_dir: Path) -> tuple[list[RuleTestCase], list[RuleIssue]]:
    """Every case of ``tests_dir/*.yaml``; a case names facts inline or a Bundle file next to it."""
    cases: list[RuleTestCase] = []
    issues: list[RuleIssue] = []
    for path in sorted(Path(tests_dir).glob("*.yaml")):
        file = str(path)
        root, errs = parse_located(path.read_text(encoding="utf-8"), file)
        issues.extend(errs)
        if root is None:
            continue
        r = Reader(file)
        top = r.mapping(root, "a rule test file", ("description", "cases"), ("cases",))
        if top is None or "cases" not in top.items:
            issues.extend(r.issues)
            continue
        for node in r.seq(top.items["cases"][1], "cases"):
            m = r.mapping(node, "a test case", CASE_KEYS, ("name", "expect"))
            if m is None:
                continue
            if ("facts" in m.items) == ("bundle" in m.items):
                r.fail(m.line, "a test case gives exactly one of 'facts' or 'bundle'")
                continue
            expect_node = m.items.get("expect")
            if expect_node is not None:
                em = r.mapping(expect_node[1], "expect", EXPECT_KEYS)
                if em is not None and "routes" in em.items:
                    for route in r.seq(em.items["routes"][1], "expect.routes"):
                        r.mapping(route, "an expected route", ROUTE_EXPECT_KEYS, ("recipient",))
            data = plain(m)
            if "bundle" in data:
                bundle_path = (path.parent / str(data["bundle"])).resolve()
                try:
                    document = json.loads(bundle_path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    r.fail(m.items["bundle"][1].line, f"cannot read the Bundle {data['bundle']}: {exc}")
                    continue
            else:
                document = dict(data["facts"] or {})
            for key in ("now", "working_day", "declined_by"):
                if key in data:
                    document[key] = data[key]
            cases.append(
                RuleTestCase(str(data["name"]), file, m.line, document, dict(data.get("expect") or {}))
            )
        issues.extend(r.issues)
    return cases, issues


def run_rule_tests(
    cases: Sequence[RuleTestCase], ruleset: RuleSet, directory: Directory, calendar: WorkCalendar
) -> list[CaseResult]:
    results = []
    for case in cases:
        try:
            facts = facts_from_document(case.document, directory=directory, calendar=calendar)
        except InvalidInput as exc:
            results.append(CaseResult(case, False, (f"cannot build facts: {exc.message}",)))
            continue
        decision = decide(facts, ruleset, directory)
        failures = compare_decision(decision.as_dict(), case.expect)
        results.append(CaseResult(case, not failures, tuple(failures), decision))
    return results


def compare_decision(actual: Mapping[str, Any], expect: Mapping[str, Any]) -> list[str]:
    failures: list[str] = []
    for key in ("matched", "fallback"):
        if key in expect and actual[key] != expect[key]:
            failures.append(f"{key}: expected {expect[key]}, got {actual[key]}")
    if "rules" in expect:
        got = sorted(t["rule"] for t in actual["explanation"] if t["outcome"] == "matched")
        want = sorted(expect["rules"] or [])
        if got != want:
            failures.append(f"matched rules: expected {want}, got {got}")
    if "routes" in expect:
        routes = {r["recipient"]: r for r in actual["routes"]}
        wanted = {str(r["recipient"]): r for r in expect["routes"] or []}
        if set(routes) != set(wanted):
            failures.append(f"recipients: expected {sorted(wanted)}, got {sorted(routes)}")
        for rid, want in wanted.items():
            got_route = routes.get(rid)
            if got_route is None:
                continue
            flat = {**got_route, **got_route["sla"], "ack": got_route["sla"]["acknowledge"]}
            for key, value in want.items():
                if key == "recipient":
                    continue
                have = flat.get(key)
                if isinstance(value, list) and isinstance(have, list):
                    ok = list(value) == list(have)
                else:
                    ok = have == value
                if not ok:
                    failures.append(f"{rid}.{key}: expected {value!r}, got {have!r}")
    return failures
