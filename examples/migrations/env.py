"""Alembic environment: the app's tables and the workos_* tables, all from SQLModel.metadata."""

import os

from alembic import context
from sqlalchemy import engine_from_config, pool
from sqlmodel import SQLModel

# Importing the package puts the workos_* tables on SQLModel.metadata.
from fastapi_workos_authkit import normalise_url

# Import your own models here too, so their tables join the same metadata:
# import myapp.models

config = context.config
target_metadata = SQLModel.metadata
url = normalise_url(
    os.environ.get("AUTHKIT_DATABASE_URL") or config.get_main_option("sqlalchemy.url") or ""
)


def run_migrations_offline() -> None:
    """Write the SQL to stdout instead of running it (``alembic upgrade head --sql``)."""
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations against the database."""
    connectable = engine_from_config(
        {"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with connectable.connect() as connection:
        # Batch mode lets SQLite, which cannot ALTER most things, take column changes too.
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
