"""The deployment files parse and agree with the code (Docker itself cannot run here)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from bot.config import Settings

DEPLOY = ROOT / "deploy"


def env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        names.add(str(choices[0]) if choices else "POLICYBOT_" + name.upper())
    return names


def test_the_env_example_lists_every_setting() -> None:
    text = (DEPLOY / "policybot.env.example").read_text()
    listed = set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", text, flags=re.M))
    missing = env_names() - listed
    assert not missing, f"add these to deploy/policybot.env.example: {sorted(missing)}"
    assert "POLICYBOT_MIGRATIONS_DIR" in listed


def test_the_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in env_names():
        # The SMTP settings share one row: `POLICYBOT_SMTP_HOST` `_PORT` `_USERNAME` …
        suffix = f"`_{name.removeprefix('POLICYBOT_SMTP_')}`"
        assert name in readme or (name.startswith("POLICYBOT_SMTP_") and suffix in readme), (
            f"README misses {name}")


def test_the_compose_file_runs_the_bot_after_a_healthy_postgres() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    bot, db = compose["services"]["policybot"], compose["services"]["db"]
    assert bot["depends_on"]["db"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert bot["environment"]["POLICYBOT_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert bot["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / bot["build"]["context"] / bot["build"]["dockerfile"]).is_file()
    assert any(v.startswith("pgdata:") for v in db["volumes"])
    assert "pgdata" in compose["volumes"]


def test_the_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    instructions = [line.split()[0] for line in text.splitlines()
                    if line and not line.startswith((" ", "#"))]
    assert instructions.count("FROM") == 2
    assert "USER" in instructions and "HEALTHCHECK" in instructions
    assert "policybot db upgrade && exec policybot run" in text
    for copied in re.findall(r"^COPY (?!--from)(\S+)", text, flags=re.M):
        assert (ROOT / copied).exists(), f"Dockerfile copies a missing path: {copied}"


def test_the_systemd_unit_is_hardened() -> None:
    text = (DEPLOY / "policybot.service").read_text()
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "Restart=on-failure",
                 "EnvironmentFile=/etc/policybot/policybot.env",
                 "ReadWritePaths=/var/lib/policybot"):
        assert line in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    # Point the unit at binaries that exist here, so that verify checks the unit itself.
    unit = (DEPLOY / "policybot.service").read_text()
    unit = unit.replace("/opt/policybot/.venv/bin/policybot", shutil.which("true") or "/bin/true")
    unit = re.sub(r"^(User|Group|EnvironmentFile|WorkingDirectory)=.*$", "", unit, flags=re.M)
    path = tmp_path / "policybot.service"
    path.write_text(unit)
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                            text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if str(path) in line or "policybot.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
