"""One virtualenv per peer implementation, outside the repository, and a JSON pipe to run it.

The peers (``diversity``, ``nltk``, ``datasketch``, ``lexicalrichness``) pull large or
conflicting dependencies (torch, transformers, spaCy, pandas), so none of them is a dependency
of collapsewatch: each lives in ``$COLLAPSEWATCH_PEERS_DIR/<peer>`` (default
``~/.cache/collapsewatch-peers/<peer>``) and is driven through ``runner.py`` over stdin/stdout.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

from service.logging import get_logger

log = get_logger("benchmarks.peers")

RUNNER = Path(__file__).with_name("runner.py")

# torch is installed first, pinned, in the venvs whose peer pulls it in: this machine serves a
# local CPU wheel for exactly this version, so pip never resolves a CUDA build from the index.
TORCH = "torch==2.13.0"


@dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]
    needs_torch: bool = False


PEERS: dict[str, Peer] = {
    # diversity imports spaCy, openai and yaml at import time without declaring them.
    "diversity": Peer(
        "diversity",
        ("diversity==0.3.1", "spacy", "openai", "pyyaml"),
        needs_torch=True,
    ),
    "nltk": Peer("nltk", ("nltk==3.10.4",)),
    "datasketch": Peer("datasketch", ("datasketch==2.0.0",)),
    "lexicalrichness": Peer("lexicalrichness", ("lexicalrichness==0.5.1",)),
}


def cache_dir() -> Path:
    """Where the peer venvs live (never inside the repository)."""
    configured = os.environ.get("COLLAPSEWATCH_PEERS_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "collapsewatch-peers"


def _python(peer: Peer) -> Path:
    return cache_dir() / peer.name / "bin" / "python"


def _stamp_text(peer: Peer) -> str:
    wanted = ([TORCH] if peer.needs_torch else []) + list(peer.requirements)
    return hashlib.sha256("\n".join(wanted).encode()).hexdigest()


def ensure(name: str) -> Path:
    """Create the peer's venv and install it unless an identical install is already there.

    Returns the venv's python. Re-running is cheap: a stamp file records what was installed.
    """
    peer = PEERS[name]
    root = cache_dir() / peer.name
    stamp = root / ".collapsewatch-installed"
    python = _python(peer)
    if stamp.is_file() and python.exists() and stamp.read_text() == _stamp_text(peer):
        return python
    log.info("installing peer", extra={"peer": name, "venv": str(root)})
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=False).create(root)
    pip = [str(python), "-m", "pip", "install", "-q"]
    if peer.needs_torch:
        subprocess.run([*pip, TORCH], check=True)
    subprocess.run([*pip, *peer.requirements], check=True)
    stamp.write_text(_stamp_text(peer))
    return python


def versions(name: str) -> dict[str, str]:
    """Installed versions of the peer's top-level requirements (recorded in the fixture)."""
    peer = PEERS[name]
    dists = [req.split("==")[0] for req in peer.requirements]
    code = (
        "import json, sys\nfrom importlib.metadata import version\n"
        "print(json.dumps({d: version(d) for d in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [str(_python(peer)), "-c", code, *dists], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def run(name: str, op: str, payload: dict, *, timeout: float = 3600.0) -> dict:
    """Run one operation of ``runner.py`` inside the peer's venv and return its JSON answer.

    The answer carries ``seconds``: the time of the computation measured inside the peer
    process (interpreter start and imports excluded).
    """
    return _call(name, {"op": op, **payload}, timeout)


def run_batch(name: str, requests: list[dict], *, timeout: float = 3600.0) -> list[dict]:
    """Several operations (each ``{"op": ..., **payload}``) in one peer process."""
    return _call(name, {"batch": requests}, timeout)


def _call(name: str, request_obj: dict, timeout: float):
    python = ensure(name)
    request = json.dumps(request_obj)
    proc = subprocess.run(
        [str(python), str(RUNNER)],
        input=request,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONUTF8": "1", "TQDM_DISABLE": "1"},
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        what = request_obj.get("op", "batch")
        raise RuntimeError(f"peer {name} failed on {what!r} (exit {proc.returncode}); see stderr")
    return json.loads(proc.stdout.strip().splitlines()[-1])
