"""``python -m bot`` is ``policybot``."""

from bot.cli import main

main()
