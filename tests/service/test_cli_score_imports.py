"""``collapsewatch score`` stays light to start: a repeated score of a file takes about a
second, of which importing the database layer (SQLAlchemy and the tables) or scipy.stats
would each add ~0.5 s of CPU. Checked in a fresh interpreter, as a user runs it."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from tests.support import REPO

HEAVY = ("sqlalchemy", "scipy.stats", "scipy.sparse", "fastapi", "celery", "onnxruntime")


def test_scoring_a_file_imports_neither_the_database_layer_nor_scipy_stats(
        human_documents, tmp_path):
    docs = [" ".join(d.split()) for d in human_documents]
    random.Random(3).shuffle(docs)
    src, window = tmp_path / "ref.txt", tmp_path / "window.jsonl"
    src.write_text("\n".join(docs[:300]))
    window.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[300:400]))
    ref = tmp_path / "ref.cwp"
    code = (
        "import json, sys\n"
        "import metrics\n"
        "docs = open(sys.argv[1]).read().splitlines()\n"
        "metrics.save_profile(metrics.build_reference(docs, 'r', embedder=None), sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(src), str(ref)], check=True, cwd=REPO)
    probe = (
        "import json, sys\n"
        "from service.cli import main\n"
        "code = main(['score', '--reference', sys.argv[1], sys.argv[2], '--format', 'table'])\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c")}
    done = subprocess.run([sys.executable, "-c", probe, str(ref), str(window)], cwd=REPO,
                          env=env, capture_output=True, text=True, check=False)
    result = json.loads(done.stderr.strip().splitlines()[-1])
    assert result == {"code": 0, "heavy": []}, done.stderr
    assert "health" in done.stdout
