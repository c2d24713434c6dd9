"""Models and migrations never drift apart (``alembic check``), on SQLite and PostgreSQL."""

from sqlalchemy import create_engine, inspect

from service.domain.migrate import check
from service.domain.tables import Base


def test_migrations_match_models(database_url):
    check(database_url)


def test_migrations_create_every_table(database_url):
    engine = create_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) <= tables
