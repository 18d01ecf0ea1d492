"""Rule files → compiled RuleSet; the query language; the matcher. Pure: no I/O but reading
the rules directory in :func:`load_rules`.

    rs = load_rules(Path("rules"))
    rs.match(entry, feed_name="mod-ja", feed_tags=["ja"])  -> list[Match]
    run_examples(rs)                                       -> list[ExampleResult]
"""

from bot.model import field_text
from bot.rules.examples import ExampleResult, run_examples
from bot.rules.load import RuleLoadError, load_rule_file, load_rules
from bot.rules.match import DEFAULT_FIELDS, Document
from bot.rules.ruleset import Evaluation, Example, Rule, RuleSet

__all__ = [
    "DEFAULT_FIELDS",
    "Document",
    "Evaluation",
    "Example",
    "ExampleResult",
    "Rule",
    "RuleLoadError",
    "RuleSet",
    "field_text",
    "load_rule_file",
    "load_rules",
    "run_examples",
]
