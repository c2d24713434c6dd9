"""The shipped human-text sample (derived from Debian's ``fortunes``).

Used by the demo, the tests and the benchmarks. Regenerate with
``scripts/make_human_sample.py``.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def _load() -> tuple[tuple[str, str], ...]:
    ref = resources.files("service.demo") / "data" / "human_sample.jsonl.gz"
    with ref.open("rb") as raw, gzip.GzipFile(fileobj=raw) as fh:
        rows = [json.loads(line) for line in fh]
    return tuple((row["text"], row["source"]) for row in rows)


def human_documents() -> list[str]:
    """All documents of the shipped sample, in a fixed order (15k fortunes, ~440k words)."""
    return [text for text, _ in _load()]


def human_documents_with_source() -> list[tuple[str, str]]:
    """(text, source file) pairs, for splits that keep sources apart."""
    return list(_load())
