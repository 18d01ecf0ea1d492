"""The analysts' web console (``policybot web``, issue 8): alerts, rules with a live-preview
editor, feeds and digests, on the same functions as the CLI.

    bot/web/app.py        create_app(settings): the Starlette app, what pages share
    bot/web/auth.py       users (login form, proxy header, or local), roles, CSRF
    bot/web/rulefiles.py  atomic saves of rules/ files, conflict checks, git commits
    bot/web/render.py     feed text → escaped, highlighted HTML
    bot/web/login.py, alerts.py, rules.py, feeds.py, digests.py: the pages
"""

from bot.web.app import create_app

__all__ = ["create_app"]
