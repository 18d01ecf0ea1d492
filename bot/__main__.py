"""``python -m bot`` is ``policybot``."""

from bot.cli import main

# Guarded: the parse workers (bot.parsepool, started with "spawn") import the parent's main
# module, and must not run the command line again.
if __name__ == "__main__":
    main()
