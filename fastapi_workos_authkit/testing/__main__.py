"""``python -m fastapi_workos_authkit.testing --port 8787 --users 1000``: serve a seeded fake
WorkOS on loopback (for command-line tests and benchmarks)."""

from .fake_workos import main

main()
