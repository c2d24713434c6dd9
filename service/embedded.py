"""Embedded mode: migrations on a SQLite file, then the API (worker and beat join later)."""

from __future__ import annotations

from service.settings import get_settings


def run_embedded(host: str, port: int, demo: bool = False) -> int:
    import uvicorn

    from service.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade()
    uvicorn.run("service.app:create_app", factory=True, host=host, port=port,
                log_config=None, access_log=False)
    return 0
