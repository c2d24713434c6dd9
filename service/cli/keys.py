"""CLI: ``collapsewatch keys create|list|revoke`` (API keys)."""

from __future__ import annotations

import argparse
import json
import sys


def _session():
    from service.domain.db import session_scope
    from service.domain.migrate import upgrade

    upgrade()
    return session_scope()


def cmd_keys_create(args: argparse.Namespace) -> int:
    from service.domain.clock import utcnow
    from service.domain.keys import create_key, parse_duration

    expires_at = utcnow() + parse_duration(args.expires_in) if args.expires_in else None
    with _session() as session:
        key = create_key(session, args.scope, args.model, args.description, expires_at)
    print(key)
    return 0


def _when(value) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_keys_list(args: argparse.Namespace) -> int:
    from service.domain.keys import key_public, list_keys

    keys = []
    with _session() as session:
        after = None
        while True:  # every key, a page at a time
            rows, after = list_keys(session, 500, after)
            keys += [key_public(r) for r in rows]
            if after is None:
                break
    if args.format == "json":
        json.dump({"keys": keys}, sys.stdout, default=lambda v: v.isoformat(), indent=2)
        print()
        return 0
    header = ("ID", "SCOPE", "MODEL", "CREATED", "LAST USED", "EXPIRES", "REVOKED",
              "DESCRIPTION")
    lines = [header] + [
        (str(k["id"]), k["scope"], k["model"] or "*", _when(k["created_at"]),
         _when(k["last_used_at"]), _when(k["expires_at"]), _when(k["revoked_at"]),
         k["description"] or "")
        for k in keys
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        print("  ".join([*cells, line[-1]]).rstrip())
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from service.domain.keys import revoke_key

    with _session() as session:
        row = revoke_key(session, args.id)
        print(f"key {row.id} ({row.scope}{', model ' + row.model_name if row.model_name else ''})"
              f" revoked at {_when(row.revoked_at)}")
    return 0


def _key_id(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a key id (see `keys list`)")
    return int(text)


def register(sub) -> None:
    from service.domain.scopes import SCOPES  # not .keys: that imports the database layer

    p = sub.add_parser("keys", help="API keys: create, list, revoke")
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION")
    ks.required = True
    c = ks.add_parser("create", help="create a key and print it once (only its hash is stored)")
    c.add_argument("--scope", required=True, choices=list(SCOPES),
                   help="read: reads; ingest: send samples; operator: acknowledge alerts; "
                        "admin: everything")
    c.add_argument("--model", default=None,
                   help="limit the key to one model, for every verb (reads included)")
    c.add_argument("--description", default=None)
    c.add_argument("--expires-in", default=None, metavar="DURATION",
                   help="e.g. 30d, 12h, 2w (default: never expires)")
    c.set_defaults(func=cmd_keys_create)

    ls = ks.add_parser("list", help="list keys (never the keys themselves)")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.set_defaults(func=cmd_keys_list)

    r = ks.add_parser("revoke", help="revoke a key: refused at once by every API process")
    r.add_argument("id", type=_key_id, help="the key's id (from `keys list`)")
    r.set_defaults(func=cmd_keys_revoke)
