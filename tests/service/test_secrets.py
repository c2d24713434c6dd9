"""Channel secrets at rest: encrypted with COLLAPSEWATCH_SECRET_KEY, rotated by a command."""

from __future__ import annotations

import json
import logging

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from service.channels.webhook import SIGNATURE_HEADER, verify
from service.cli import main
from service.delivery import outbox
from service.domain import alerts as engine
from service.domain import secrets
from service.domain.db import session_scope
from service.domain.tables import Notification
from service.settings import get_settings
from tests.service.alert_fixtures import (
    add_evaluation,
    allow_loopback_channels,
    make_channel,
    make_model,
)
from tests.support import recording_server

HMAC_SECRET = "hmac-secret-0123456789"
ROUTING_KEY = "routing-key-R0UT1NG-K3Y-0123456789"
SLACK_TOKEN = "T000/B000/slack-token-XYZZY"


@pytest.fixture(autouse=True)
def _loopback(monkeypatch):
    allow_loopback_channels(monkeypatch)


def use_keys(monkeypatch, key: bytes | str | None, old: str | None = None) -> None:
    for name, value in (("COLLAPSEWATCH_SECRET_KEY", key), ("COLLAPSEWATCH_SECRET_KEY_OLD", old)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value.decode() if isinstance(value, bytes) else value)
    get_settings.cache_clear()


def raw_configs() -> dict[str, str]:
    """The config column as the database holds it (no ORM, no decryption)."""
    with session_scope() as s:
        rows = s.execute(text("SELECT name, config FROM channels ORDER BY id")).all()
    return {name: config if isinstance(config, str) else json.dumps(config)
            for name, config in rows}


def create_channels(client, headers, srv_url: str) -> None:
    for body in (
        {"name": "hook", "kind": "webhook",
         "config": {"url": srv_url + "/hook", "secret": HMAC_SECRET}},
        {"name": "pd", "kind": "pagerduty", "min_severity": "critical",
         "config": {"routing_key": ROUTING_KEY, "url": srv_url + "/pd"}},
        {"name": "slack", "kind": "slack",
         "config": {"webhook_url": f"{srv_url}/services/{SLACK_TOKEN}"}},
    ):
        r = client.post("/api/v1/channels", json=body, headers=headers)
        assert r.status_code == 201, r.text


def fire_and_deliver(model: str = "bot") -> list[str]:
    model_id = make_model(model)
    for _ in range(2):
        add_evaluation(model_id, "collapse")
    with session_scope() as s:
        ids = engine.evaluate_model(s, model_id).notification_ids
    return [outbox.deliver(nid).status for nid in ids]


def assert_delivered_in_clear(srv) -> None:
    (pd,) = srv.received("/pd")
    assert pd.json()["routing_key"] == ROUTING_KEY
    hooks = srv.received("/hook")
    assert hooks and all(verify(HMAC_SECRET, h.headers[SIGNATURE_HEADER], h.body)
                         for h in hooks)
    assert srv.received(f"/services/{SLACK_TOKEN}")


def test_secrets_are_stored_encrypted_and_still_delivered(client, database_url, admin_headers,
                                                          monkeypatch):
    use_keys(monkeypatch, Fernet.generate_key())
    with recording_server() as srv:
        create_channels(client, admin_headers, srv.url)
        stored = raw_configs()
        for secret in (HMAC_SECRET, ROUTING_KEY, SLACK_TOKEN):
            assert secret not in json.dumps(stored)
        assert all(secrets.PREFIX in config for config in stored.values())
        # the API shows neither the secret nor its ciphertext
        listed = client.get("/api/v1/channels", headers=admin_headers).text
        assert secrets.PREFIX not in listed and ROUTING_KEY not in listed
        assert set(fire_and_deliver()) == {"sent"}
        assert_delivered_in_clear(srv)


def test_plaintext_rows_from_before_the_key_still_deliver(database_url, service_env,
                                                          monkeypatch):
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url + "/hook", "secret": HMAC_SECRET})
        use_keys(monkeypatch, Fernet.generate_key())
        assert set(fire_and_deliver()) == {"sent"}
        (hook, *_) = srv.received("/hook")
        assert verify(HMAC_SECRET, hook.headers[SIGNATURE_HEADER], hook.body)


def test_rotation_reencrypts_every_row(client, database_url, admin_headers, monkeypatch,
                                       capsys):
    # a Fernet key is url-safe base64 and may begin with "-": the "=" form reads it whole
    old = b"-" + Fernet.generate_key()[1:]
    new = Fernet.generate_key()
    Fernet(old)  # still a valid key
    use_keys(monkeypatch, old)
    with recording_server() as srv:
        create_channels(client, admin_headers, srv.url)
        # a row stored before any key was set
        make_channel("legacy", "webhook", {"url": srv.url + "/legacy", "secret": HMAC_SECRET})
        before = raw_configs()
        use_keys(monkeypatch, new)
        assert main(["secrets", "rotate", f"--old-key={old.decode()}"]) == 0
        assert "re-encrypted 4 secret(s) in 4 channel(s)" in capsys.readouterr().out
        after = raw_configs()
        assert set(after) == set(before)
        for name, config in after.items():
            assert config != before[name] and secrets.PREFIX in config
            assert HMAC_SECRET not in config and ROUTING_KEY not in config
        # the new key alone reads every row; the old one reads none
        only_new = secrets.Keyring.from_settings(old_keys="")
        only_old = secrets.Keyring(Fernet(old), (Fernet(old),))
        with session_scope() as s:
            from service.domain.tables import Channel

            for channel in s.scalars(select(Channel)):
                secrets.open_config(channel.kind, channel.config, keyring=only_new)
                with pytest.raises(secrets.SecretKeyError):
                    secrets.open_config(channel.kind, channel.config, keyring=only_old)
        assert set(fire_and_deliver()) == {"sent"}
        assert_delivered_in_clear(srv)


def test_rotation_with_a_wrong_old_key_changes_nothing(client, database_url, admin_headers,
                                                        monkeypatch, capsys):
    use_keys(monkeypatch, Fernet.generate_key())
    with recording_server() as srv:
        create_channels(client, admin_headers, srv.url)
    before = raw_configs()
    use_keys(monkeypatch, Fernet.generate_key())
    capsys.readouterr()  # drop what the set-up logged
    # "=": a Fernet key may start with "-", which argparse would take for an option
    assert main(["secrets", "rotate", f"--old-key={Fernet.generate_key().decode()}"]) == 2
    # structured log records (JSON lines) may precede it; the error itself is one plain line
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.strip() and not line.startswith("{")]
    assert len(err) == 1 and "cannot be decrypted" in err[0]
    assert raw_configs() == before
    assert main(["secrets", "rotate", "--old-key", "not-a-key"]) == 2
    assert "not a Fernet key" in capsys.readouterr().err
    assert raw_configs() == before


def test_a_wrong_key_dead_letters_with_a_clear_error(client, database_url, admin_headers,
                                                     monkeypatch):
    use_keys(monkeypatch, Fernet.generate_key())
    with recording_server() as srv:
        create_channels(client, admin_headers, srv.url)
        use_keys(monkeypatch, Fernet.generate_key())
        assert set(fire_and_deliver()) == {"dead"}
        assert srv.received() == []
        with session_scope() as s:
            errors = set(s.scalars(select(Notification.last_error)))
        assert all("cannot be decrypted with COLLAPSEWATCH_SECRET_KEY" in e for e in errors)
        # and without any key, the error says so
        use_keys(monkeypatch, None)
        assert set(fire_and_deliver("other")) == {"dead"}
        with session_scope() as s:
            errors = set(s.scalars(select(Notification.last_error)))
        assert any("COLLAPSEWATCH_SECRET_KEY is not set" in e for e in errors)


def test_a_malformed_key_is_a_clear_503_on_channel_creation(client, database_url,
                                                           admin_headers, monkeypatch):
    use_keys(monkeypatch, "not-a-fernet-key")
    r = client.post("/api/v1/channels", headers=admin_headers, json={
        "name": "pd", "kind": "pagerduty", "config": {"routing_key": ROUTING_KEY}})
    assert r.status_code == 503 and "not a Fernet key" in r.json()["detail"]
    assert r.headers["content-type"].startswith("application/problem+json")
    assert raw_configs() == {}


def test_startup_warns_once_without_a_key(service_env, monkeypatch, caplog):
    from service.api.app import create_app

    use_keys(monkeypatch, None)
    monkeypatch.setattr(secrets, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="collapsewatch.secrets"):
        create_app()
        create_app()
        secrets.warn_if_unconfigured("worker")
    warnings = [r for r in caplog.records if r.name == "collapsewatch.secrets"]
    assert len(warnings) == 1 and "stored in plaintext" in warnings[0].getMessage()
    monkeypatch.setattr(secrets, "_warned", False)
    use_keys(monkeypatch, Fernet.generate_key())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="collapsewatch.secrets"):
        create_app()
    assert [r for r in caplog.records if r.name == "collapsewatch.secrets"] == []


def test_a_worker_without_a_key_warns_once_at_startup(tmp_path):
    """The real worker process (embedded broker): one warning line, then it keeps running."""
    import time

    from service.domain.migrate import upgrade
    from tests.support import process

    url = f"sqlite:///{tmp_path / 'cw.db'}"
    upgrade(url)
    env = {"COLLAPSEWATCH_DATABASE_URL": url, "COLLAPSEWATCH_DATA_DIR": str(tmp_path),
           "COLLAPSEWATCH_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
           "COLLAPSEWATCH_SECRET_KEY": "", "COLLAPSEWATCH_LOG_JSON": "1"}
    with process(["collapsewatch", "worker", "--pool", "threads", "--concurrency", "1"],
                 tmp_path / "worker.log", env) as worker:
        deadline = time.monotonic() + 60
        while "stored in plaintext" not in worker.log() and time.monotonic() < deadline:
            assert worker.popen.poll() is None, worker.log()
            time.sleep(0.2)
        time.sleep(1)
        assert worker.popen.poll() is None, worker.log()
        warnings = [json.loads(line) for line in worker.log().splitlines()
                    if "stored in plaintext" in line]
    assert len(warnings) == 1, worker.log()
    assert warnings[0]["level"] == "warning" and warnings[0]["component"] == "worker"
