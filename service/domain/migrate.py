"""Run Alembic migrations programmatically (``collapsewatch migrate``, ``serve``, tests)."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config

from service.settings import get_settings


def alembic_config(url: str | None = None) -> Config:
    ini = resources.files("migrations") / "alembic.ini"
    cfg = Config(str(ini))
    cfg.set_main_option("script_location", str(resources.files("migrations")))
    cfg.set_main_option("sqlalchemy.url", url or get_settings().resolved_database_url)
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the database at ``url`` (default: settings) to ``revision``."""
    resolved = url or get_settings().resolved_database_url
    if resolved.startswith("sqlite:///"):
        from pathlib import Path

        Path(resolved.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(resolved), revision)


def check(url: str | None = None) -> None:
    """Raise if the models and the migrations differ (``alembic check``)."""
    command.check(alembic_config(url))
