"""HTTP API (FastAPI) and staff pages."""
