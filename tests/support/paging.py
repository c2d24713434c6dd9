"""Reading a cursor-paged list route to its end (the paging tests)."""

from __future__ import annotations

from collections.abc import Callable


def all_pages(client, url: str, key: str, headers: dict, limit: int,
              between: Callable[[], object] | None = None, **params) -> list[list]:
    """Every page of ``url`` (rows under ``key``), following ``next_cursor``;
    ``between()`` runs after each page but the last (rows arriving meanwhile)."""
    pages, cursor = [], None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        r = client.get(url, params=query, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body[key])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        if between is not None:
            between()
