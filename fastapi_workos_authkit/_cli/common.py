"""What every subcommand shares: exit codes, `CommandError`, finding the app's `AuthKit`."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from enum import IntEnum
from typing import Any

from .._authkit import AuthKit
from .._exceptions import ConfigurationError


class ExitCode(IntEnum):
    """Process exit codes, so a cron job or CI step can tell failures apart."""

    OK = 0
    FAILURE = 1
    """Anything else: a handler raised during a backfill, a lost lease, a bad ``--app``."""
    USAGE = 2
    """Bad arguments (argparse's own code)."""
    CONFIGURATION = 3
    """A required setting is missing, such as ``WORKOS_API_KEY``."""
    UNAUTHORIZED = 4
    """WorkOS refused the API key (401/403)."""
    WORKOS_UNAVAILABLE = 5
    """WorkOS kept failing (5xx, 429 or network errors) after every retry."""
    DATABASE_UNAVAILABLE = 6
    """The database could not be reached."""
    EVENTS_FAILED = 7
    """The run finished, but some events failed in a handler: see ``status``, then
    ``replay-failed`` once the handler is fixed."""


class CommandError(Exception):
    """A failure with a message for the user and an exit code."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


# -- finding the app -----------------------------------------------------------------------


NEEDS_APP = frozenset(
    {
        "sync-events",
        "backfill-users",
        "backfill-organizations",
        "backfill-memberships",
        "replay-failed",
    }
)
"""Subcommands that run the app's handlers, and so refuse to run without ``--app``."""


def load_authkit(target: str | None, *, app_dir: str = ".") -> AuthKit:
    """Import ``module:attribute`` (dotted attributes allowed) and return the `AuthKit` there.

    ``app_dir`` (the current directory by default) is searched first, as uvicorn's ``--app-dir``
    is, but only while the module is imported: ``sys.path`` is left as it was found. Without a
    target, an `AuthKit` configured from the environment alone (no handlers).
    """
    if not target:
        return AuthKit()
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise CommandError(
            f"--app must look like module:attribute (for example main:authkit), not {target!r}",
            ExitCode.USAGE,
        )
    try:
        with _importable(app_dir):
            found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise _import_failed(module_name, exc) from None  # a module the app imports
        raise CommandError(
            f"Could not import {module_name!r} from {os.path.abspath(app_dir)} (set --app-dir to "
            f"the directory that holds it): {exc}",
            ExitCode.FAILURE,
        ) from None
    except Exception as exc:
        # Importing runs the app's module: whatever it raises is the user's to fix, and a
        # traceback through importlib tells them less than one line does.
        raise _import_failed(module_name, exc) from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise CommandError(
                f"{module_name!r} has no attribute {attribute!r}", ExitCode.FAILURE
            ) from None
    if not isinstance(found, AuthKit):
        raise CommandError(
            f"{target} is a {type(found).__name__}, not an AuthKit: point --app at the AuthKit "
            "instance your app configures (for example main:authkit)",
            ExitCode.FAILURE,
        )
    return found


def _import_failed(module_name: str, exc: Exception) -> CommandError:
    if isinstance(exc, ConfigurationError):
        return CommandError(
            f"importing {module_name!r} failed, because its module-level code asked for a "
            f"setting that is missing: {exc}",
            ExitCode.CONFIGURATION,
        )
    return CommandError(
        f"importing {module_name!r} failed: {type(exc).__name__}: {exc}", ExitCode.FAILURE
    )


@contextmanager
def _importable(directory: str) -> Iterator[None]:
    """Put ``directory`` first on ``sys.path`` for the duration of an import, if it is missing.

    The CLI may run inside another program (a test, a task runner): a lasting change to
    ``sys.path`` would shadow that program's modules with whatever the directory holds.
    """
    path = os.path.abspath(directory)
    if path in sys.path:
        yield
        return
    sys.path.insert(0, path)
    try:
        yield
    finally:
        # The import may itself have edited sys.path: take out our entry only.
        with suppress(ValueError):
            sys.path.remove(path)


# -- progress ------------------------------------------------------------------------------
