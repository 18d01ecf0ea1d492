"""Run every rule's embedded ``tests:`` (``policybot rules test``)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.model import Entry, Hit
from bot.rules.explain import explain, missing_parts, terms_found
from bot.rules.match import Document
from bot.rules.ruleset import Example, ExampleKind, Rule, RuleSet

REQUIRED_KINDS: frozenset[ExampleKind] = frozenset({"match", "no_match"})
EXAMPLE_FEED = "example"


@dataclass(frozen=True, slots=True)
class ExampleResult:
    """One example's outcome. ``passed`` means it behaved as its kind says.

    For ``todo_match``/``todo_no_match`` a pass means the known gap is fixed (move the example
    to ``match``/``no_match``); a failure there is expected and does not fail the run.
    """

    rule_id: str
    kind: ExampleKind
    example: Entry
    passed: bool
    hits: tuple[Hit, ...]
    reason: str
    line: int | None = None

    @property
    def failed(self) -> bool:
        """A required example (match / no_match) that did not pass."""
        return not self.passed and self.kind in REQUIRED_KINDS


def _describe(hits: tuple[Hit, ...]) -> str:
    terms = list(dict.fromkeys(h.term for h in hits))
    return ", ".join(terms[:8]) + (" …" if len(terms) > 8 else "")


def run_example(rule: Rule, example: Example) -> ExampleResult:
    """Evaluate one example (ignoring ``enabled``; ``scope.feeds`` only if it names a feed)."""
    feed = example.feed or EXAMPLE_FEED
    if example.feed is not None and not rule.in_scope(feed):
        matched, why = False, f"feed '{feed}' is outside scope.feeds"
        hits: tuple[Hit, ...] = ()
    else:
        doc = Document(example.entry, feed_name=feed)
        result = rule.evaluate(doc)
        matched, hits = result.matched, result.hits
        if result.matched:
            why = f"matched: {_describe(hits)}"
        elif result.query_matched:
            fired = []
            for name, part in explain(rule, doc).excludes:
                if name in result.excluded_by:
                    fired.append(f"{name} (found {', '.join(terms_found(part)) or 'no term'})")
            why = f"query matched ({_describe(hits)}) but excluded by {'; '.join(fired)}"
        else:
            query = explain(rule, doc).query
            found = terms_found(query)
            why = (
                "the query did not match: "
                + (f"found {', '.join(found[:8])}" if found else "none of its terms occur")
                + f"; missing {', '.join(missing_parts(query)[:4])}"
            )
    wants_match = example.kind in ("match", "todo_match")
    return ExampleResult(
        rule_id=rule.id,
        kind=example.kind,
        example=example.entry,
        passed=matched == wants_match,
        hits=hits,
        reason=why,
        line=example.line,
    )


def run_examples(rs: RuleSet) -> list[ExampleResult]:
    """Every example of every rule (disabled ones too), in rule order then file order."""
    return [run_example(rule, ex) for rule in rs.rules for ex in rule.examples]
