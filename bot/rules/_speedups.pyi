"""Types of the compiled term search (bot/rules/_speedups.c)."""

from collections.abc import Callable

# (search id, left-bounded, right-bounded, prefix, exact text of a case-sensitive term)
_Value = tuple[int, bool, bool, bool, str | None]

class Scanner:
    def __init__(self, keys: list[str], values: list[tuple[_Value, ...]],
                 filing: list[tuple[int, str]], word_bmp: bytes,
                 is_word: Callable[[str], bool]) -> None: ...
    def search(self, text: str, exact_text: str | None, field_index: int,
               occurrences: object) -> None: ...
