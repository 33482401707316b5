"""The Alembic worked example (docs/migrations.md): autogenerate sees the workos_* tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from fastapi_workos_authkit._sync.database import make_engine

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "migrations"


@pytest.fixture
def alembic_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The example's configuration, with its revisions and database in a temporary folder."""
    monkeypatch.setenv("AUTHKIT_DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
    config = Config(str(EXAMPLE / "alembic.ini"))
    config.set_main_option("version_locations", str(tmp_path / "versions"))
    (tmp_path / "versions").mkdir()
    return config


def test_autogenerate_creates_the_workos_tables_and_upgrade_applies_them(
    alembic_config: Config, tmp_path: Path
) -> None:
    command.revision(alembic_config, message="workos tables", autogenerate=True)
    [revision] = (tmp_path / "versions").glob("*.py")
    source = revision.read_text(encoding="utf-8")
    for table in (
        "workos_users",
        "workos_events",
        "workos_user_tombstones",
        "workos_sync_state",
        "workos_leases",
        "workos_organizations",
        "workos_organization_memberships",
        "workos_sessions",
        "workos_tombstones",
    ):
        assert f"op.create_table('{table}'" in source or f'op.create_table("{table}"' in source

    command.upgrade(alembic_config, "head")
    engine = make_engine(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        tables = set(inspect(engine).get_table_names())
        columns = {c["name"] for c in inspect(engine).get_columns("workos_users")}
    finally:
        engine.dispose()
    assert {"workos_users", "workos_events", "workos_user_tombstones"} <= tables
    assert {"id", "email", "metadata", "updated_at"} <= columns

    # A second autogenerate against the migrated database finds nothing left to do.
    command.revision(alembic_config, message="no changes", autogenerate=True)
    second = next(p for p in (tmp_path / "versions").glob("*.py") if p != revision)
    assert "op.create_table" not in second.read_text(encoding="utf-8")
    assert "op.add_column" not in second.read_text(encoding="utf-8")
