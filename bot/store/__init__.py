"""Storage: SQLAlchemy tables, migrations and the repository functions over them."""

from bot.store.db import make_engine, upgrade
from bot.store.digests import FirstMention
from bot.store.repo import (
    AlertWrite,
    EntryWrite,
    FeedState,
    FeedUpdate,
    PollSaved,
    PollWrite,
    Store,
    StoredEntry,
)

__all__ = [
    "AlertWrite", "EntryWrite", "FeedState", "FeedUpdate", "FirstMention", "PollSaved",
    "PollWrite", "Store", "StoredEntry", "make_engine", "upgrade",
]
