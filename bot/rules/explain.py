"""Why a rule did or did not match an entry: the query as a tree, each part true or false,
with the terms it found (``policybot rules explain``, and the "why" of ``rules test``)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.model import Hit
from bot.rules.match import (
    AllOf,
    AnyOf,
    Compiled,
    Document,
    FeedIs,
    InField,
    LangIs,
    Leaf,
    Negate,
    Proximity,
    evaluate,
)
from bot.rules.ruleset import Evaluation, Rule


@dataclass(frozen=True, slots=True)
class Part:
    """One node of a query: how it reads, whether it held, what it found, its parts."""

    label: str
    matched: bool
    found: tuple[Hit, ...] = ()
    parts: tuple[Part, ...] = ()


@dataclass(frozen=True, slots=True)
class Explanation:
    rule_id: str
    query: Part
    excludes: tuple[tuple[str, Part], ...]
    result: Evaluation


def _label(node: Compiled) -> str:
    if isinstance(node, Leaf):
        return node.source
    if isinstance(node, AllOf):
        return "AND"
    if isinstance(node, AnyOf):
        return "OR"
    if isinstance(node, Negate):
        return "NOT"
    if isinstance(node, InField):
        return f"{node.field}:"
    if isinstance(node, FeedIs):
        return f"feed:{node.name}"
    if isinstance(node, LangIs):
        return f"lang:{node.code}"
    op = "ONEAR" if node.ordered else "NEAR"
    return f"{node.left.source} {op}/{node.distance} {node.right.source}"


def _children(node: Compiled) -> tuple[Compiled, ...]:
    if isinstance(node, AllOf | AnyOf):
        return node.children
    if isinstance(node, Negate | InField):
        return (node.child,)
    return ()


def explain_node(node: Compiled, doc: Document, fields: tuple[str, ...]) -> Part:
    """Evaluate every part of ``node`` (no short-circuit: an analyst wants to see it all)."""
    matched, occs = evaluate(node, doc, fields)
    inner = (node.field,) if isinstance(node, InField) else fields
    found: tuple[Hit, ...] = ()
    if isinstance(node, Leaf | Proximity):
        found = tuple(dict.fromkeys(doc.hit(o) for o in occs))
    parts = tuple(explain_node(c, doc, inner) for c in _children(node))
    return Part(_label(node), matched, found, parts)


def explain(rule: Rule, doc: Document) -> Explanation:
    """The query and every exclusion, part by part, against one entry."""
    query = explain_node(rule.compiled, doc, rule.fields)
    excludes = tuple(
        (name, explain_node(node, doc, rule.fields)) for name, node in rule.compiled_excludes
    )
    return Explanation(rule.id, query, excludes, rule.evaluate(doc))


def terms_found(part: Part) -> list[str]:
    """Every term any leaf of ``part`` found, in order, once (for a one-line "why")."""
    out: dict[str, None] = {}

    def visit(p: Part) -> None:
        for h in p.found:
            out.setdefault(h.term, None)
        for c in p.parts:
            visit(c)

    visit(part)
    return list(out)


def missing_parts(part: Part) -> list[str]:
    """The false parts that kept a false query from matching: for AND, each false child
    (recursively); for a false leaf or OR, the part itself."""
    if part.matched:
        return []
    if part.label == "AND":
        return [m for c in part.parts if not c.matched for m in missing_parts(c)]
    if part.label == "OR":
        options = [" AND ".join(missing_parts(c)) for c in part.parts]
        return ["(" + " OR ".join(o if " " not in o or o.startswith("(") else f"({o})"
                                  for o in options) + ")"]
    return [part.label]
