#!/usr/bin/env bash
# Regenerate the single initial revision from service/models.py (pre-release only:
# once a release ships, add new revisions instead). Deterministic revision id.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
rm -f migrations/versions/*_0001_initial.py
.venv/bin/python - "$tmp" <<'PY'
import sys
from alembic import command
from service.migrate import alembic_config
cfg = alembic_config(f"sqlite:///{sys.argv[1]}/gen.db")
command.revision(cfg, message="initial", autogenerate=True, rev_id="0001")
PY
sed -i 's/^Create Date: .*/Create Date: 2026-11-23/' migrations/versions/*_0001_initial.py
mv migrations/versions/*_0001_initial.py migrations/versions/2026_11_23_0001_initial.py 2>/dev/null || true
.venv/bin/ruff format -q migrations/versions/ || true
rm -rf "$tmp"
echo "regenerated migrations/versions/2026_11_23_0001_initial.py"
