"""The audit log of changes made in the web console: who changed which rule or feed file,
when, why (the message they typed), the diff, and the git commit if one was made."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, select

from bot.store.db import transaction
from bot.store.tables import audit_log


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    user: str
    action: str
    subject: str
    path: str
    message: str
    diff: str
    commit: str | None


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, *, at: datetime, user: str, action: str, subject: str, path: str,
               message: str, diff: str, commit: str | None) -> int:
        with transaction(self.engine) as conn:
            result = conn.execute(insert(audit_log).values(
                at=at, user=user, action=action, subject=subject, path=path, message=message,
                diff=diff, commit=commit).returning(audit_log.c.id))
            return int(result.scalar_one())

    def for_subject(self, subject: str, limit: int = 50) -> list[AuditEntry]:
        """The latest changes to one rule (or feed), newest first."""
        return self._select(audit_log.c.subject == subject, limit)

    def latest(self, limit: int = 50) -> list[AuditEntry]:
        return self._select(None, limit)

    def _select(self, where: object, limit: int) -> list[AuditEntry]:
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if where is not None:
            query = query.where(where)  # type: ignore[arg-type]
        with self.engine.connect() as conn:
            return [AuditEntry(r.id, r.at, r.user, r.action, r.subject, r.path, r.message,
                               r.diff, r.commit) for r in conn.execute(query)]
