"""Cursor paging on /alerts and /channels (limit, cursor -> next_cursor), on SQLite and
PostgreSQL: every row once, newest alerts first, stable under inserts between and during
page reads."""

from __future__ import annotations

import threading

from service.domain.db import session_scope
from service.domain.tables import Alert
from tests.service.alert_fixtures import make_channel, make_model
from tests.service.api_fixtures import assert_problem
from tests.support.paging import all_pages

ALERTS = "/api/v1/alerts"
CHANNELS = "/api/v1/channels"


def _add_alerts(model_id: int, n: int, *, state: str = "firing") -> list[int]:
    with session_scope() as s:
        rows = [Alert(model_id=model_id, kind="collapse", severity="critical", state=state,
                      dedup_key=f"k{i}", summary=f"alert {i}") for i in range(n)]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def test_alerts_page_newest_first_each_once(client, database_url, admin_headers):
    ids = _add_alerts(make_model("bot"), 7)
    pages = all_pages(client, ALERTS, "alerts", admin_headers, limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [a["id"] for p in pages for a in p] == sorted(ids, reverse=True)
    # exactly a page's worth: the last full page says there is no next one
    pages = all_pages(client, ALERTS, "alerts", admin_headers, limit=7)
    assert [len(p) for p in pages] == [7]


def test_alerts_raised_between_pages_neither_repeat_nor_shift_later_pages(
        client, database_url, admin_headers):
    bot = make_model("bot")
    ids = _add_alerts(bot, 9)
    pages = all_pages(client, ALERTS, "alerts", admin_headers, limit=2,
                   between=lambda: _add_alerts(bot, 2))
    seen = [a["id"] for p in pages for a in p]
    assert len(seen) == len(set(seen))
    assert seen == sorted(ids, reverse=True)  # what existed at the first page, in order


def test_alerts_page_under_concurrent_inserts(client, database_url, admin_headers):
    bot = make_model("bot")
    ids = _add_alerts(bot, 40)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            _add_alerts(bot, 1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        pages = all_pages(client, ALERTS, "alerts", admin_headers, limit=3)
    finally:
        stop.set()
        thread.join()
    seen = [a["id"] for p in pages for a in p]
    assert len(seen) == len(set(seen))
    assert set(ids) <= set(seen)
    assert seen == sorted(seen, reverse=True)


def test_alert_filters_and_a_model_limited_key_page_over_their_rows_only(
        client, database_url, admin_headers, make_key):
    bot, other = make_model("bot"), make_model("other")
    firing = _add_alerts(bot, 3)
    _add_alerts(bot, 2, state="resolved")
    theirs = _add_alerts(other, 3)
    pages = all_pages(client, ALERTS, "alerts", admin_headers, limit=2, state="firing",
                   model="bot")
    assert [a["id"] for p in pages for a in p] == firing[::-1]
    headers = {"Authorization": f"Bearer {make_key('read', 'other')}"}
    pages = all_pages(client, ALERTS, "alerts", headers, limit=2)
    assert [a["id"] for p in pages for a in p] == theirs[::-1]


def test_channels_page_by_id_each_once(client, database_url, admin_headers):
    ids = [make_channel(f"hook{i}", "webhook", {"url": f"http://127.0.0.1:9/{i}"})
           for i in range(5)]
    pages = all_pages(client, CHANNELS, "channels", admin_headers, limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [c["id"] for p in pages for c in p] == ids
    made = iter(range(100, 200))

    def another():  # a channel created between pages lands after the cursor, once
        make_channel(f"hook{next(made)}", "webhook", {"url": "http://127.0.0.1:9/x"})

    seen = [c["id"] for p in all_pages(client, CHANNELS, "channels", admin_headers, limit=2,
                                    between=another) for c in p]
    assert len(seen) == len(set(seen)) and seen == sorted(seen) and set(ids) <= set(seen)


def test_a_model_limited_admin_key_pages_over_its_channels_only(client, database_url,
                                                                  admin_headers, make_key):
    make_model("bot")
    make_model("other")
    mine = []
    for i in range(6):
        # interleaved with channels it must not see, so the filter spans page boundaries
        make_channel(f"all{i}", "webhook", {"url": "http://127.0.0.1:9/a"})
        make_channel(f"other{i}", "webhook", {"url": "http://127.0.0.1:9/o"}, models=["other"])
        mine.append(make_channel(f"bot{i}", "webhook", {"url": "http://127.0.0.1:9/b"},
                                 models=["bot"]))
    headers = {"Authorization": f"Bearer {make_key('admin', 'bot')}"}
    pages = all_pages(client, CHANNELS, "channels", headers, limit=4)
    assert [len(p) for p in pages] == [4, 2]
    assert [c["id"] for p in pages for c in p] == mine


def test_a_cursor_not_from_next_cursor_is_422(client, database_url, admin_headers):
    make_model("bot")
    for url in (ALERTS, CHANNELS):
        for bad in ("not-a-cursor", "WyJhIl0", "WzEsMl0", "Wy0xXQ", "x" * 600):
            r = client.get(url, params={"cursor": bad}, headers=admin_headers)
            assert r.status_code == 422, (url, bad, r.text)
        assert_problem(client.get(url, params={"cursor": "@@"}, headers=admin_headers), 422,
                       "cursor")
        for limit in (0, 1001):
            r = client.get(url, params={"limit": limit}, headers=admin_headers)
            assert r.status_code == 422, (url, limit)
    # a well-formed cursor past every id (and past the 32-bit channel id) is an empty page
    from service.domain.paging import encode_cursor

    for url, key in ((CHANNELS, "channels"), (ALERTS, "alerts")):
        body = client.get(url, params={"cursor": encode_cursor(2**40)},
                          headers=admin_headers).json()
        assert body[key] == []
        assert body["next_cursor"] is None
