"""``python -m fastapi_workos_authkit``: the same command line as ``fastapi-workos-authkit``."""

from .cli import main

raise SystemExit(main())
