"""CLI: ``collapsewatch gc [--dry-run]`` — apply retention now (the reaper also does, in
bounded passes); ``--dry-run`` prints what would go and changes nothing."""

from __future__ import annotations

import argparse
import json

from service.settings import get_settings


def cmd_gc(args: argparse.Namespace) -> int:
    from service.domain import retention
    from service.domain.db import session_factory

    settings = get_settings()
    factory = session_factory()
    if args.dry_run:
        with factory() as session:
            report = retention.dry_run(session, settings)
    else:
        total = retention.RetentionReport(dry_run=False)
        while True:  # pass after pass until nothing is left (each pass is bounded)
            report = retention.run(factory, settings)
            for key, value in report.rows.items():
                total.rows[key] += value
            if report.complete:
                break
        report = total
    if args.format == "json":
        print(json.dumps(report.as_dict()))
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for key in retention.CATEGORIES:
            print(f"{verb} {report.rows[key]:>10} {key.replace('_', ' ')}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gc", help="apply retention now: delete old samples, evaluations, "
                                  "resolved alerts, delivered notifications, deleted models")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be deleted and change nothing")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_gc)
