"""Read YAML while keeping where each value came from, for ``file:line:col`` errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Located:
    """A parsed YAML document plus the node tree that says where each part of it is."""

    path: Path
    data: Any
    node: yaml.Node | None

    def where(self, *keys: str | int) -> tuple[int | None, int | None]:
        """1-based (line, col) of the value at ``keys`` (deepest existing node)."""
        node = self.node
        found = node
        for key in keys:
            if isinstance(node, yaml.MappingNode):
                child = next(
                    (v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key),
                    None,
                )
                if child is None:
                    # Point at the mapping itself, or at the key when it exists.
                    break
                node = child
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
                if key >= len(node.value):
                    break
                node = node.value[key]
            else:
                break
            found = node
        if found is None:
            return None, None
        return found.start_mark.line + 1, found.start_mark.column + 1

    def key_where(self, *keys: str | int) -> tuple[int | None, int | None]:
        """1-based (line, col) of the *key* named last in ``keys`` (for unknown-key errors)."""
        parent_line, parent_col = self.where(*keys[:-1])
        node = self.node
        for key in keys[:-1]:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
                node = node.value[key] if key < len(node.value) else None
        if isinstance(node, yaml.MappingNode):
            for k, _ in node.value:
                if k.value == keys[-1]:
                    return k.start_mark.line + 1, k.start_mark.column + 1
        return parent_line, parent_col

    def error(self, message: str, *keys: str | int, at_key: bool = False) -> ConfigError:
        line, col = self.key_where(*keys) if at_key and keys else self.where(*keys)
        return ConfigError(message, path=self.path, line=line, col=col)


def read_yaml(path: Path) -> Located:
    """Parse one YAML file; a syntax error becomes a ConfigError with its line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=path) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        problem = exc.problem or "invalid YAML"
        raise ConfigError(
            f"invalid YAML: {problem}",
            path=path,
            line=mark.line + 1 if mark else None,
            col=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path=path) from None
    return Located(path, data, node)
