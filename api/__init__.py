"""The REST API: `api.app.create_app()` builds the FastAPI app (routers per resource in api/routers/)."""
