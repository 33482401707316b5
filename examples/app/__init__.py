"""The example app: the Convex WorkOS AuthKit component's example, ported to FastAPI.

Run it with ``uvicorn examples.app.main:create_app --factory`` from the repository root.
"""
