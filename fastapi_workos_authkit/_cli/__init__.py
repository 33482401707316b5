"""The CLI's subcommand wiring (webhooks, doctor); `fastapi_workos_authkit.cli` is the entry."""
