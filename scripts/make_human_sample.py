"""Derive the shipped human-text sample from Debian's `fortunes` package.

Splits every fortune file on ``\\n%\\n``, drops ``*.dat`` index files and ``.u8``
links, strips backspace overstrike (``X\\bX`` bold, ``_\\bX`` underline), drops
offensive (``off/``) fortunes and empty entries, and writes one JSON object per
document (``{"text", "source"}``) to a gzipped JSONL file.

    python scripts/make_human_sample.py /usr/share/games/fortunes service/demo/data/human_sample.jsonl.gz
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

OVERSTRIKE = re.compile(r".\x08")


def iter_fortunes(root: Path):
    for path in sorted(root.iterdir()):
        if path.is_dir() or path.is_symlink() or path.suffix in {".dat", ".u8"}:
            continue
        raw = path.read_bytes().decode("utf-8", errors="replace")
        for entry in raw.split("\n%\n"):
            text = OVERSTRIKE.sub("", entry).strip("%\n ").strip()
            if text:
                yield {"text": text, "source": path.name}


def main() -> None:
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    docs = list(iter_fortunes(root))
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(out, "wb", mtime=0) as fh:
        for doc in docs:
            fh.write((json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8"))
    words = sum(len(d["text"].split()) for d in docs)
    print(f"{len(docs)} documents, {words} words -> {out}")


if __name__ == "__main__":
    main()
