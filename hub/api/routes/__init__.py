"""API v1 routers."""
