"""Signed routes: signature checks, the webhook route and the Actions route."""
