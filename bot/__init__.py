"""policybot: policy-monitoring alerts from RSS/Atom feeds to Slack and email."""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/policybot/policybot"
USER_AGENT = f"policybot/{__version__} (+{PROJECT_URL})"
