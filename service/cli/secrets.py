"""CLI: ``collapsewatch secrets rotate`` (channel secrets encrypted at rest)."""

from __future__ import annotations

import argparse

ROTATE_HELP = """\
Re-encrypt every channel secret (PagerDuty routing keys, webhook HMAC secrets, Slack
webhook URLs) with COLLAPSEWATCH_SECRET_KEY. Rows encrypted with an older key are read with
--old-key (or COLLAPSEWATCH_SECRET_KEY_OLD; several keys comma-separated); plaintext rows
stored before a key was set are encrypted too. All or nothing: if a row cannot be decrypted
with any of the keys, nothing is written.

Rotating a key:
  1. generate a key:
     python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"
  2. give every api and worker process COLLAPSEWATCH_SECRET_KEY=<new> and
     COLLAPSEWATCH_SECRET_KEY_OLD=<old> (both keys read; the new one writes) and restart them
  3. run, with both variables set: collapsewatch secrets rotate
     (--old-key=<old> works too, but leaves the key in the shell history; write it with
     "=": a Fernet key may begin with "-", which "--old-key <old>" reads as an option)
  4. drop COLLAPSEWATCH_SECRET_KEY_OLD from the processes
"""


def cmd_secrets_rotate(args: argparse.Namespace) -> int:
    from service.domain.db import session_scope
    from service.domain.migrate import upgrade
    from service.domain.secrets import Keyring, rotate

    # --old-key, else COLLAPSEWATCH_SECRET_KEY_OLD; a malformed key fails before any write
    keyring = Keyring.from_settings(old_keys=args.old_key)
    upgrade()
    with session_scope() as session:
        result = rotate(session, keyring)
    print(f"re-encrypted {result.fields} secret(s) in {result.channels} channel(s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    secrets = sub.add_parser("secrets", help="channel secrets encrypted at rest")
    ssub = secrets.add_subparsers(dest="secrets_command", metavar="SUBCOMMAND")
    ssub.required = True
    rotate = ssub.add_parser("rotate", help="re-encrypt channel secrets with the current key",
                             description=ROTATE_HELP,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    rotate.add_argument("--old-key", metavar="KEY", default=None,
                        help="the previous Fernet key(s), comma-separated, written "
                             "--old-key=KEY (a key may begin with '-'; default: "
                             "COLLAPSEWATCH_SECRET_KEY_OLD)")
    rotate.set_defaults(func=cmd_secrets_rotate)
