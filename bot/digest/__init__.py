"""The digest email (issue 6): what happened on each topic in a period, mailed once.

    config.py    rules/digests.yaml -> DigestConfig (file:line:col errors)
    schedule.py  cron send times, periods ("2026-W48"), what is due (pure)
    build.py     build_digest(config, rules, period, matches, …) -> Digest (pure)
    render.py    render_text / render_html (Jinja2, css-inline) / compose -> EmailMessage (pure)
    mail.py      SmtpMailer: STARTTLS or TLS, verified certificates, MailError(permanent)
    job.py       DigestRunner: claim | read | build | render | send | record
    service.py   the cron job per digest and the catch-up sweep inside `policybot run`

The store side (reads and claim rows) is ``bot/store/digests.py``.
"""
