"""The query language: tokens → syntax tree, with strict errors that say how to fix the query.

Grammar (DESIGN.md, "Rules")::

    query   = or
    or      = and { "OR" and }        -- AND and OR at one level need parentheses
    and     = unary { "AND" unary }
    unary   = "NOT" unary | prox
    prox    = primary [ ("NEAR/" n | "ONEAR/" n) primary ]
    primary = "(" or ")" | field ":" primary | "$" name | "@" list | term
    term    = '"' phrase '"' | word ["*"] | "case:" (word | '"' phrase '"') | "/" regex "/"

This module only reads the query; names ($terms, @lists) are resolved and terms compiled by
``bot.rules.compile``. Every node carries its offset in the query string so that errors can
point at the column in the rule file.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from enum import Enum

# Fields a query can name with ``field:``. The text fields are searched; ``feed`` and
# ``lang`` test the feed's name/tags and the entry's language.
TEXT_FIELDS: tuple[str, ...] = ("title", "summary", "content", "author", "category", "link")
META_FIELDS: tuple[str, ...] = ("feed", "lang")
FIELDS: tuple[str, ...] = TEXT_FIELDS + META_FIELDS

MIN_PREFIX_STEM = 3
_MAX_DEPTH = 50

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_PROX = re.compile(r"(O?)NEAR(?:/(\d*))?")
_WORD_STOP = frozenset('()"')


class QuerySyntaxError(ValueError):
    """A query that cannot be read; ``offset`` is the 0-based index into the query string."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


# --- syntax tree -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    """A literal: a word, ``word*`` prefix, quoted phrase or ``/regex/``; ``case:`` makes it
    exact."""

    text: str
    prefix: bool
    case_sensitive: bool
    quoted: bool
    pos: int
    end: int
    regex: bool = False


@dataclass(frozen=True, slots=True)
class TermRef:
    """``$name``: a term list defined under ``terms:`` in the rule."""

    name: str
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class ListRef:
    """``@name``: a shared list in ``rules/lists/<name>.yaml``."""

    name: str
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class Not:
    child: Node
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class Near:
    """``left NEAR/n right``: at most ``n`` words between; ``ordered`` for ONEAR."""

    left: Node
    right: Node
    distance: int
    ordered: bool
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class FieldScope:
    """``field:primary``: the child is evaluated in that field only."""

    field: str
    child: Node
    pos: int
    end: int


Node = Term | TermRef | ListRef | Not | And | Or | Near | FieldScope


# --- tokens ------------------------------------------------------------------------------


class Tok(Enum):
    LPAREN = "'('"
    RPAREN = "')'"
    AND = "AND"
    OR = "OR"
    NOT = "NOT"
    NEAR = "NEAR"
    FIELD = "field:"
    TERM = "term"
    TERMREF = "$name"
    LISTREF = "@name"
    EOF = "end of query"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Tok
    pos: int
    end: int
    text: str = ""  # the word/phrase, the $/@ name, the field name
    prefix: bool = False
    case_sensitive: bool = False
    quoted: bool = False
    distance: int = 0
    ordered: bool = False
    regex: bool = False

    def describe(self, query: str) -> str:
        if self.kind is Tok.EOF:
            return "the end of the query"
        return repr(query[self.pos : self.end])


_OPERATORS = {"AND": Tok.AND, "OR": Tok.OR, "NOT": Tok.NOT}


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    n = len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
        elif c == "(":
            tokens.append(Token(Tok.LPAREN, i, i + 1))
            i += 1
        elif c == ")":
            tokens.append(Token(Tok.RPAREN, i, i + 1))
            i += 1
        elif c in "$@":
            m = _NAME.match(query, i + 1)
            if not m:
                what = "term list" if c == "$" else "list"
                raise QuerySyntaxError(f"'{c}' must be followed by a {what} name, e.g. {c}name", i)
            kind = Tok.TERMREF if c == "$" else Tok.LISTREF
            tokens.append(Token(kind, i, m.end(), text=m.group()))
            i = m.end()
        elif c == "/":
            tok = _read_regex(query, i, case_sensitive=False, start=i)
            tokens.append(tok)
            i = tok.end
        else:
            tok = _read_term_or_word(query, i)
            tokens.append(tok)
            i = tok.end
    tokens.append(Token(Tok.EOF, n, n))
    return tokens


def _read_phrase(query: str, i: int, *, case_sensitive: bool, start: int) -> Token:
    close = query.find('"', i + 1)
    if close == -1:
        raise QuerySyntaxError('unterminated phrase: add the closing "', i)
    body = query[i + 1 : close]
    prefix = body.endswith("*")
    if prefix:
        body = body[:-1]
    _check_star(body, i + 1)
    if not body.strip():
        raise QuerySyntaxError('empty phrase ""', i)
    return Token(
        Tok.TERM, start, close + 1, text=body, prefix=prefix, case_sensitive=case_sensitive,
        quoted=True,
    )


def _read_regex(query: str, i: int, *, case_sensitive: bool, start: int) -> Token:
    """``/body/``: a backslash escapes the next character (``\\/`` is a slash)."""
    j = i + 1
    n = len(query)
    while j < n and query[j] != "/":
        j += 2 if query[j] == "\\" else 1
    if j >= n:
        raise QuerySyntaxError(
            "unterminated regular expression: add the closing /, or quote the text to search "
            'for a slash, e.g. "a/b"',
            i,
        )
    body = query[i + 1 : j]
    if not body:
        raise QuerySyntaxError("empty regular expression //", i)
    return Token(Tok.TERM, start, j + 1, text=body, case_sensitive=case_sensitive, regex=True)


def _check_star(text: str, base: int) -> None:
    star = text.find("*")
    if star != -1:
        raise QuerySyntaxError(
            "'*' is only allowed at the end of a word (a whole-word prefix such as radar*)",
            base + star,
        )


def _read_term_or_word(query: str, i: int) -> Token:
    n = len(query)
    if query[i] == '"':
        return _read_phrase(query, i, case_sensitive=False, start=i)
    j = i
    while j < n and not query[j].isspace() and query[j] not in _WORD_STOP:
        j += 1
    word = query[i:j]
    colon = word.find(":")
    head = word[:colon] if colon > 0 else ""
    if head.isascii() and head.isalpha():
        after = i + colon + 1
        if head == "case":
            if after < n and query[after] == '"':
                return _read_phrase(query, after, case_sensitive=True, start=i)
            if after < n and query[after] == "/":
                return _read_regex(query, after, case_sensitive=True, start=i)
            rest = query[after:j]
            if not rest:
                raise QuerySyntaxError(
                    'case: must be followed directly by a word or "phrase", e.g. case:OSA', i
                )
            return _word_token(query, rest, after, j, case_sensitive=True, start=i)
        if head in FIELDS:
            if after >= n or query[after].isspace() or query[after] == ")":
                raise QuerySyntaxError(
                    f"{head}: must be followed directly by a term or '(', e.g. {head}:GCAP",
                    after,
                )
            return Token(Tok.FIELD, i, after, text=head)
        raise QuerySyntaxError(
            f"unknown field '{head}:'{_suggest(head, FIELDS + ('case',), fmt='{}:')} Fields "
            f"are {', '.join(FIELDS)}; quote the text to search for a colon",
            i,
        )
    if word in _OPERATORS:
        return Token(_OPERATORS[word], i, j)
    prox = _PROX.fullmatch(word)
    if prox:
        if not prox.group(2):
            raise QuerySyntaxError(
                f"{word} needs a distance in words, e.g. {prox.group(1)}NEAR/5", i
            )
        return Token(
            Tok.NEAR, i, j, distance=int(prox.group(2)), ordered=bool(prox.group(1))
        )
    return _word_token(query, word, i, j, case_sensitive=False, start=i)


def _word_token(
    query: str, word: str, i: int, j: int, *, case_sensitive: bool, start: int
) -> Token:
    prefix = word.endswith("*")
    body = word[:-1] if prefix else word
    _check_star(body, i)
    if not body:
        if i > 0 and query[i - 1] == '"':
            raise QuerySyntaxError('put the * inside the quotes: "patrol boat*"', i)
        raise QuerySyntaxError("'*' needs a word before it, e.g. radar*", i)
    return Token(Tok.TERM, start, j, text=body, prefix=prefix, case_sensitive=case_sensitive)


def _suggest(name: str, choices: tuple[str, ...], fmt: str = "{}") -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {fmt.format(close[0])}?" if close else "."


# --- parser ------------------------------------------------------------------------------

_PRIMARY_START = frozenset(
    {Tok.LPAREN, Tok.FIELD, Tok.TERM, Tok.TERMREF, Tok.LISTREF}
)


def _snippet(query: str, node: Node | Token, limit: int = 30) -> str:
    text = " ".join(query[node.pos : node.end].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.i = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def fail(self, message: str, at: Token | Node) -> QuerySyntaxError:
        return QuerySyntaxError(message, at.pos)

    def parse(self) -> Node:
        if self.peek().kind is Tok.EOF:
            raise QuerySyntaxError("the query is empty", 0)
        node = self.level()
        if self.peek().kind is Tok.RPAREN:
            raise self.fail("unexpected ')' with no matching '('", self.peek())
        return node

    def level(self) -> Node:
        """unary { (AND|OR) unary } with one kind of operator per level."""
        items = [self.unary()]
        op: Token | None = None
        while True:
            tok = self.peek()
            if tok.kind in (Tok.AND, Tok.OR):
                if op is not None and tok.kind is not op.kind:
                    raise self.fail(self._mixed_message(items, op, tok), tok)
                op = op or tok
                self.advance()
                if self.peek().kind in (Tok.EOF, Tok.RPAREN, Tok.AND, Tok.OR):
                    raise self.fail(
                        f"{tok.kind.value} needs a term after it, found "
                        f"{self.peek().describe(self.query)}",
                        self.peek(),
                    )
                items.append(self.unary())
            elif tok.kind in (Tok.EOF, Tok.RPAREN):
                break
            elif tok.kind is Tok.NOT:
                nxt = self.tokens[self.i + 1]
                after = _snippet(self.query, nxt) if nxt.kind in _PRIMARY_START else "…"
                raise self.fail(
                    f"NOT is not a binary operator: write "
                    f"{_snippet(self.query, items[-1])} AND NOT {after}",
                    tok,
                )
            elif tok.kind is Tok.NEAR:
                raise self.fail(
                    "NEAR/ONEAR joins two single terms, $lists or parenthesised ORs; "
                    "chain them with parentheses or AND",
                    tok,
                )
            elif (word := _lower_operator(tok)) or (word := _lower_operator(items[-1])):
                at = tok if _lower_operator(tok) else items[-1]
                raise self.fail(
                    f"operators are upper case: write {word.upper()} (or \"{word}\" to search "
                    "for the word)",
                    at,
                )
            else:
                prev = items[-1]
                left = _snippet(self.query, prev)
                right = _snippet(self.query, tok)
                if isinstance(prev, Term) and tok.kind is Tok.TERM and not prev.quoted \
                        and not tok.quoted:
                    hint = f'write "{left} {right}" for the phrase or {left} AND {right}'
                else:
                    hint = f"write {left} AND {right} or {left} OR {right}"
                raise self.fail(f"missing operator between {left} and {right}: {hint}", tok)
        if len(items) == 1:
            return items[0]
        assert op is not None
        cls = And if op.kind is Tok.AND else Or
        return cls(tuple(items), items[0].pos, items[-1].end)

    def _mixed_message(self, items: list[Node], op: Token, tok: Token) -> str:
        a = _snippet(self.query, items[-2], 20) if len(items) > 1 else "a"
        b = _snippet(self.query, items[-1], 20)
        c = "…"
        nxt = self.tokens[self.i + 1]
        if nxt.kind in _PRIMARY_START or nxt.kind is Tok.NOT:
            c = _snippet(self.query, nxt, 20)
        first, second = op.kind.value, tok.kind.value
        return (
            f"{first} and {second} at the same level need parentheses: write "
            f"({a} {first} {b}) {second} {c} or {a} {first} ({b} {second} {c})"
        )

    def unary(self) -> Node:
        tok = self.peek()
        if tok.kind is Tok.NOT:
            self.advance()
            if self.peek().kind not in _PRIMARY_START and self.peek().kind is not Tok.NOT:
                nxt = self.peek()
                raise self.fail(f"NOT needs a term after it, found {nxt.describe(self.query)}", nxt)
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise self.fail("NOT nested too deeply", tok)
            child = self.unary()
            self.depth -= 1
            return Not(child, tok.pos, child.end)
        return self.prox()

    def prox(self) -> Node:
        left = self.primary()
        if self.peek().kind is not Tok.NEAR:
            return left
        op = self.advance()
        if self.peek().kind is Tok.NOT:
            raise self.fail(
                "NOT cannot sit inside NEAR (it applies to the whole entry): move it out, "
                "e.g. (a NEAR/5 b) AND NOT c",
                self.peek(),
            )
        if self.peek().kind not in _PRIMARY_START:
            raise self.fail(
                f"{self.query[op.pos:op.end]} needs a term after it, found "
                f"{self.peek().describe(self.query)}",
                self.peek(),
            )
        right = self.primary()
        if self.peek().kind is Tok.NEAR:
            raise self.fail(
                "NEAR cannot be chained: write (a NEAR/n b) AND (b NEAR/n c)", self.peek()
            )
        return Near(left, right, op.distance, op.ordered, left.pos, right.end)

    def primary(self) -> Node:
        tok = self.peek()
        if tok.kind is Tok.LPAREN:
            self.advance()
            if self.peek().kind is Tok.RPAREN:
                raise self.fail("empty parentheses ()", tok)
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise self.fail("parentheses nested too deeply", tok)
            inner = self.level()
            self.depth -= 1
            if self.peek().kind is not Tok.RPAREN:
                raise self.fail(
                    f"missing ')' to close the '(' at column {tok.pos + 1}", self.peek()
                )
            close = self.advance()
            return _with_span(inner, tok.pos, close.end)
        if tok.kind is Tok.FIELD:
            self.advance()
            if self.peek().kind not in _PRIMARY_START or self.peek().kind is Tok.FIELD:
                raise self.fail(
                    f"{tok.text}: must be followed by a term or '(', found "
                    f"{self.peek().describe(self.query)}",
                    self.peek(),
                )
            child = self.primary()
            return FieldScope(tok.text, child, tok.pos, child.end)
        if tok.kind is Tok.TERM:
            self.advance()
            return Term(tok.text, tok.prefix, tok.case_sensitive, tok.quoted, tok.pos, tok.end,
                        tok.regex)
        if tok.kind is Tok.TERMREF:
            self.advance()
            return TermRef(tok.text, tok.pos, tok.end)
        if tok.kind is Tok.LISTREF:
            self.advance()
            return ListRef(tok.text, tok.pos, tok.end)
        if tok.kind is Tok.RPAREN:
            raise self.fail("unexpected ')' with no matching '('", tok)
        raise self.fail(
            "expected a term, \"phrase\", $terms, @list, NOT or '(', found "
            f"{tok.describe(self.query)}",
            tok,
        )


def _lower_operator(item: Token | Node) -> str:
    """``and``/``or``/``not`` written as a bare word (a likely typo for the operator)."""
    if isinstance(item, Token) and item.kind is not Tok.TERM:
        return ""
    if not isinstance(item, Token | Term):
        return ""
    if item.quoted or item.case_sensitive or item.prefix or item.regex:
        return ""
    return item.text if item.text in ("and", "or", "not") else ""


def _with_span(node: Node, pos: int, end: int) -> Node:
    """Widen a parenthesised node's span to include its parentheses (for snippets)."""
    if isinstance(node, And | Or):
        return type(node)(node.children, pos, end)
    return node


def parse_query(query: str) -> Node:
    """Parse ``query`` or raise :class:`QuerySyntaxError` with the offset at fault."""
    return _Parser(query).parse()


def can_match_without_terms(node: Node) -> bool:
    """True if ``node`` is satisfied by an entry with no text at all (e.g. ``NOT x``)."""
    if isinstance(node, Not):
        return not can_match_without_terms(node.child)
    if isinstance(node, And):
        return all(can_match_without_terms(c) for c in node.children)
    if isinstance(node, Or):
        return any(can_match_without_terms(c) for c in node.children)
    if isinstance(node, FieldScope):
        return node.field not in META_FIELDS and can_match_without_terms(node.child)
    return False


def iter_nodes(node: Node) -> list[Node]:
    """``node`` and all its descendants, depth first."""
    out: list[Node] = [node]
    if isinstance(node, And | Or):
        for c in node.children:
            out.extend(iter_nodes(c))
    elif isinstance(node, Not | FieldScope):
        out.extend(iter_nodes(node.child))
    elif isinstance(node, Near):
        out.extend(iter_nodes(node.left))
        out.extend(iter_nodes(node.right))
    return out


def format_query(node: Node) -> str:
    """The query text for a tree, fully parenthesised where the grammar needs it; parsing
    the result gives the same tree (:func:`shape` equal)."""
    if isinstance(node, Term):
        if node.regex:
            body = f"/{node.text}/"
        elif node.quoted or not _plain_word(node.text):
            body = f'"{node.text}{"*" if node.prefix else ""}"'
            return f"case:{body}" if node.case_sensitive else body
        else:
            body = node.text + ("*" if node.prefix else "")
        return f"case:{body}" if node.case_sensitive else body
    if isinstance(node, TermRef):
        return f"${node.name}"
    if isinstance(node, ListRef):
        return f"@{node.name}"
    if isinstance(node, Not):
        return f"NOT {_operand(node.child)}"
    if isinstance(node, And | Or):
        op = " AND " if isinstance(node, And) else " OR "
        return op.join(_operand(c) for c in node.children)
    if isinstance(node, Near):
        op = f"{'O' if node.ordered else ''}NEAR/{node.distance}"
        return f"{_operand(node.left)} {op} {_operand(node.right)}"
    child = format_query(node.child)
    if isinstance(node.child, And | Or | Near | Not | FieldScope):
        child = f"({child})"  # field: takes a primary, and not another field:
    return f"{node.field}:{child}"


def _operand(node: Node) -> str:
    text = format_query(node)
    return f"({text})" if isinstance(node, And | Or | Near) else text


def _plain_word(text: str) -> bool:
    if not text or text in _OPERATORS or _PROX.fullmatch(text) or text[0] in "$@/":
        return False
    return not any(c.isspace() or c in _WORD_STOP or c in "*:" for c in text)


def shape(node: Node) -> tuple[object, ...]:
    """``node`` without source positions, for comparing trees."""
    if isinstance(node, Term):
        return ("term", node.text, node.prefix, node.case_sensitive, node.regex)
    if isinstance(node, TermRef | ListRef):
        return (type(node).__name__, node.name)
    if isinstance(node, Not):
        return ("not", shape(node.child))
    if isinstance(node, And | Or):
        return (type(node).__name__, tuple(shape(c) for c in node.children))
    if isinstance(node, Near):
        return ("near", shape(node.left), shape(node.right), node.distance, node.ordered)
    return ("field", node.field, shape(node.child))
