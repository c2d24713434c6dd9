"""REST API routers (prefix /api/v1)."""
