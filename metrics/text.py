"""Text to integer arrays: normalisation, tokenisation, stable 64-bit hashing, n-gram keys.

Everything here is deterministic across processes and machines: token ids come from
BLAKE2b (never Python's salted ``hash()``), n-gram keys from a fixed integer mixer. Token ids
and n-gram keys are stored inside profile files, so changing either function is a profile
format change (bump ``metrics.profile.FORMAT_VERSION``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

# A word: a run of letters/digits/underscore (Unicode-aware ``\w``) with inner apostrophes
# ("don't", "l'homme"). Emoji and pictographs are tokens of their own: model outputs use
# them as content. Punctuation and whitespace separate tokens.
DEFAULT_PATTERN = (
    r"\w+(?:['\u2019]\w+)*"
    r"|[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF]"
)

# Scripts written without spaces: every character is a token (as BERT's basic tokenizer
# does for CJK ideographs); otherwise a whole Chinese sentence would be one "word".
_UNSPACED = re.compile(
    "([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f])"
)
_NEWLINES = re.compile(r"\r\n?|\u2028|\u2029")


@dataclass(frozen=True)
class TokenizerConfig:
    """How documents become tokens. Stored in every profile; windows use the profile's.

    lowercase: case-fold (``str.casefold``, Unicode-aware: "Straße" -> "strasse").
    pattern: regular expression whose matches are the tokens.
    split_unspaced: one token per CJK ideograph / kana character.
    """

    lowercase: bool = True
    pattern: str = DEFAULT_PATTERN
    split_unspaced: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TokenizerConfig:
        return cls(**{k: data[k] for k in ("lowercase", "pattern", "split_unspaced") if k in data})


@lru_cache(maxsize=8)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def normalize_document(text: str) -> str:
    """Unicode NFC, newlines unified to ``\\n``, surrounding whitespace stripped."""
    return _NEWLINES.sub("\n", unicodedata.normalize("NFC", text)).strip()


def normalize_documents(documents: Iterable[str]) -> list[str]:
    """Normalise every document (same length and order as the input). O(characters)."""
    out = []
    for i, doc in enumerate(documents):
        if not isinstance(doc, str):
            raise TypeError(f"document {i} is {type(doc).__name__}, expected str")
        out.append(normalize_document(doc))
    return out


def documents_sha256(normalized: Sequence[str]) -> str:
    """sha256 of a multiset of normalised documents (independent of their order).

    Each document contributes its UTF-8 bytes prefixed by their length, in sorted order,
    so the REST service and the CLI agree for the same documents however they arrive.
    """
    h = hashlib.sha256()
    for doc in sorted(normalized):
        data = doc.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def tokenize(text: str, config: TokenizerConfig | None = None) -> list[str]:
    """Tokens of one (normalised) document. O(characters)."""
    cfg = config or TokenizerConfig()
    if cfg.lowercase:
        text = text.casefold()
    if cfg.split_unspaced:
        text = _UNSPACED.sub(r" \1 ", text)
    return _compiled(cfg.pattern).findall(text)


def tokenize_documents(
    documents: Sequence[str], config: TokenizerConfig | None = None
) -> list[list[str]]:
    return [tokenize(doc, config) for doc in documents]


def hash_token(token: str) -> int:
    """Stable 64-bit id of one token: the first 8 bytes of BLAKE2b, little-endian."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


def hash_tokens(tokens: Sequence[str]) -> np.ndarray:
    """uint64 ids of distinct token strings (hashes each string once)."""
    return np.fromiter((hash_token(t) for t in tokens), dtype=np.uint64, count=len(tokens))


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al. 2014): a bijective, well-scrambled uint64 map."""
    z = x.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def combine(prefix: np.ndarray, token: np.ndarray) -> np.ndarray:
    """Key of an n-gram from its (n-1)-gram prefix key and its last token id (wrapping)."""
    with np.errstate(over="ignore"):
        return mix64(prefix * _GOLDEN + token)


def ngram_keys(ids: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys of all n-grams that do not cross a document boundary, and their document index.

    ids: uint64 token ids of all documents concatenated; offsets: int64 of length docs+1.
    For n == 1 the keys are the token ids themselves. O(n·T).
    """
    lengths = np.diff(offsets)
    doc_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    if n == 1:
        return ids, doc_of
    total = len(ids)
    if total < n:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    m = total - n + 1
    key = ids[:m].copy()
    for k in range(1, n):
        key = combine(key, ids[k : k + m])
    # an n-gram starting at i is inside one document when token i+n-1 belongs to the same one
    valid = doc_of[:m] == doc_of[n - 1 :]
    return key[valid], doc_of[:m][valid]


def whole_sequence_keys(ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """One key per document for its whole token sequence (exact-duplicate detection). O(T).

    Sum (wrapping) of position-salted token keys, then mixed with the length: equal
    sequences get equal keys; different ones collide with probability ~2^-64.
    """
    lengths = np.diff(offsets)
    n_docs = len(lengths)
    if n_docs == 0:
        return np.empty(0, np.uint64)
    doc_of = np.repeat(np.arange(n_docs), lengths)
    pos = (np.arange(len(ids), dtype=np.int64) - offsets[:-1][doc_of]).astype(np.uint64)
    with np.errstate(over="ignore"):
        salted = mix64(ids ^ mix64(pos + _GOLDEN))
        sums = np.zeros(n_docs, dtype=np.uint64)
        nonempty = lengths > 0
        if nonempty.any():
            # between two consecutive non-empty starts lie exactly one document's tokens
            sums[nonempty] = np.add.reduceat(salted, offsets[:-1][nonempty])
        return combine(sums, lengths.astype(np.uint64))
