"""Writing the files in rules/ from the console: atomically, never over someone else's
newer save, with a git commit when rules/ is in a repository.

Edits keep the analyst's text as typed (comments, order, quoting): a rule is saved as the
YAML in the editor; enabling, disabling and marking experimental change one top-level line.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ConfigError

RULE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
GIT_TIMEOUT = 30.0


class Conflict(ConfigError):
    """The file changed on disk since the editor loaded it."""


def version_of(text: str | None) -> str:
    """What the editor remembers of the file it loaded ("" for a file that did not exist)."""
    if text is None:
        return ""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def unified_diff(before: str | None, after: str | None, name: str) -> str:
    return "".join(difflib.unified_diff(
        (before or "").splitlines(keepends=True), (after or "").splitlines(keepends=True),
        fromfile=f"a/{name}" if before is not None else "/dev/null",
        tofile=f"b/{name}" if after is not None else "/dev/null"))


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, flush it to disk, rename it over ``path``:
    the bot's reload sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _top_level_key(text: str, key: str) -> re.Match[str] | None:
    return re.search(rf"(?m)^{re.escape(key)}:[^\n]*$", text)


def set_top_level(text: str, key: str, value: str) -> str:
    """``key: value`` at the top level of a rule file: the line replaced if present, else
    added after ``id:`` (or at the end). Comments and everything else are kept."""
    line = f"{key}: {value}"
    found = _top_level_key(text, key)
    if found:
        return text[:found.start()] + line + text[found.end():]
    anchor = _top_level_key(text, "id")
    if anchor:
        return text[:anchor.end()] + "\n" + line + text[anchor.end():]
    return text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"


@dataclass(frozen=True, slots=True)
class Saved:
    path: Path
    diff: str
    commit: str | None


class RuleFiles:
    """The files of one rules directory."""

    def __init__(self, rules_dir: Path) -> None:
        self.rules_dir = rules_dir

    def path_for(self, rule_id: str) -> Path:
        if not RULE_ID.fullmatch(rule_id):
            raise ConfigError(f"{rule_id!r} is not a rule id: use lowercase letters, digits, "
                              "- and _ (it is also the file name)")
        return self.rules_dir / f"{rule_id}.yaml"

    def relative(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.rules_dir.resolve()))
        except ValueError:
            return str(path)

    def write(self, path: Path, text: str | None, *, expected: str, author_name: str,
              author_email: str, message: str) -> Saved:
        """Write (or with ``text`` None, delete) ``path`` if it is still the version the
        editor loaded (``expected``, from :func:`version_of`); commit it if rules/ is a git
        repository. Raises :class:`Conflict` if someone saved it meanwhile."""
        before = read_text(path)
        if version_of(before) != expected:
            raise Conflict(f"{self.relative(path)} was changed by someone else since you "
                           "opened it: reload the page to see their version (your text is "
                           "still in the editor)")
        diff = unified_diff(before, text, self.relative(path))
        if text is None:
            path.unlink(missing_ok=True)
        else:
            write_atomically(path, text)
        commit = self._commit(path, author_name, author_email, message)
        return Saved(path, diff, commit)

    def _git(self, *args: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(self.rules_dir), *args], capture_output=True,
                              text=True, timeout=GIT_TIMEOUT, env=env, check=False)

    def in_git(self) -> bool:
        try:
            done = self._git("rev-parse", "--is-inside-work-tree")
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0 and done.stdout.strip() == "true"

    def _commit(self, path: Path, name: str, email: str, message: str) -> str | None:
        """Commit only ``path`` (whatever else is staged stays staged), as the analyst."""
        if not self.in_git():
            return None
        env = {**os.environ, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
               "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
        target = str(path.resolve())
        added = self._git("add", "-A", "--", target, env=env)
        if added.returncode != 0:
            raise ConfigError(f"saved, but git add failed: {_first_line(added.stderr)}")
        done = self._git("commit", "--quiet", "--no-verify", "-m", message, "--", target, env=env)
        if done.returncode != 0:
            out = _first_line(done.stdout + done.stderr)
            if "nothing to commit" in out or "no changes added" in out:
                return None
            raise ConfigError(f"saved, but git commit failed: {out}")
        head = self._git("rev-parse", "HEAD")
        return head.stdout.strip() or None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "unknown error")
