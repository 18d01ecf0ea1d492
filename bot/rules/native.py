"""Whether the engine's compiled parts (``bot/rules/_speedups.c``) are in use.

The package builds them when it is installed with a C compiler at hand (an optional
extension: without one, ``pip install`` still succeeds and the engine searches in Python,
with the same results, about twice as slowly). ``POLICYBOT_NATIVE=0`` turns them off, to
compare the two or to rule them out.
"""

from __future__ import annotations

import os
from types import ModuleType

_compiled: ModuleType | None
try:
    import bot.rules._speedups as _compiled
except ImportError:  # built without a compiler: the engine searches in Python
    _compiled = None


def compiled() -> ModuleType | None:
    """The compiled module, unless it was not built or ``POLICYBOT_NATIVE=0`` says no."""
    if os.environ.get("POLICYBOT_NATIVE", "1").strip().lower() in {"0", "false", "no", "off"}:
        return None
    return _compiled


def available() -> bool:
    """Whether the compiled module was built (whatever ``POLICYBOT_NATIVE`` says)."""
    return _compiled is not None
