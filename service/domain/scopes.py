"""The names of the API key scopes (what each may do: ``service.domain.keys``).

Apart so the command line's parser can list them without importing the database layer.
"""

from __future__ import annotations

SCOPES = ("ingest", "read", "operator", "admin")
