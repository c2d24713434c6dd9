"""Tokenizer, normalisation, stable hashing and n-gram keys."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from metrics.text import (
    TokenizerConfig,
    documents_sha256,
    hash_token,
    hash_tokens,
    ngram_keys,
    normalize_documents,
    tokenize,
    whole_sequence_keys,
)


def test_words_are_lowercased_and_punctuation_separates():
    assert tokenize("Hello, World! It's 2024.") == ["hello", "world", "it's", "2024"]


def test_non_english_words_are_kept_whole_and_casefolded():
    assert tokenize("Straße ÉCOLE naïve Привет мир") == ["strasse", "école", "naïve", "привет", "мир"]
    assert tokenize("l'homme qu’il") == ["l'homme", "qu’il"]


def test_unspaced_scripts_become_one_token_per_character():
    assert tokenize("我爱北京 and カタカナ") == ["我", "爱", "北", "京", "and", "カ", "タ", "カ", "ナ"]
    assert tokenize("我爱北京", TokenizerConfig(split_unspaced=False)) == ["我爱北京"]


def test_emoji_are_tokens_of_their_own():
    assert tokenize("great🎉🎉 job 👍") == ["great", "🎉", "🎉", "job", "👍"]


def test_empty_and_whitespace_documents_have_no_tokens():
    assert tokenize("") == []
    assert tokenize(" \n\t ") == []
    assert tokenize("...!!!") == []


def test_case_can_be_kept():
    assert tokenize("Hello hello", TokenizerConfig(lowercase=False)) == ["Hello", "hello"]


def test_very_long_document_tokenizes_linearly():
    text = "alpha beta gamma " * 200_000
    tokens = tokenize(text)
    assert len(tokens) == 600_000 and tokens[:3] == ["alpha", "beta", "gamma"]


def test_normalisation_unifies_unicode_forms_and_newlines():
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert normalize_documents([decomposed, "a\r\nb  \n"]) == [composed, "a\nb"]
    assert tokenize(normalize_documents([decomposed])[0]) == tokenize(composed)


def test_normalize_rejects_non_strings():
    with pytest.raises(TypeError, match="document 1"):
        normalize_documents(["ok", 3])


def test_documents_sha256_ignores_order_but_not_content():
    docs = normalize_documents(["one", "two", "two"])
    assert documents_sha256(docs) == documents_sha256(list(reversed(docs)))
    assert documents_sha256(docs) != documents_sha256(docs[:2])
    # length prefixes keep document boundaries apart
    assert documents_sha256(["ab", "c"]) != documents_sha256(["a", "bc"])


def test_token_ids_are_blake2b_and_independent_of_the_process():
    expected = int.from_bytes(hashlib.blake2b("naïve".encode(), digest_size=8).digest(), "little")
    assert hash_token("naïve") == expected
    # a fresh interpreter with another hash seed gives the same ids
    code = "from metrics.text import hash_tokens; print(list(hash_tokens(['a', 'b', '🎉'])))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONHASHSEED": "12345"}, check=True, cwd=None)
    assert out.stdout.strip() == str(list(hash_tokens(["a", "b", "🎉"])))


def _encode(docs):
    ids = np.concatenate([hash_tokens(d) for d in docs]) if docs else np.empty(0, np.uint64)
    offsets = np.cumsum([0] + [len(d) for d in docs]).astype(np.int64)
    return ids, offsets


def test_ngrams_never_cross_document_boundaries():
    ids, offsets = _encode([["a", "b"], ["c"], [], ["d", "e", "f"]])
    _, doc_of = ngram_keys(ids, offsets, 2)
    assert list(doc_of) == [0, 3, 3]
    _, doc3 = ngram_keys(ids, offsets, 3)
    assert list(doc3) == [3]
    assert len(ngram_keys(ids, offsets, 4)[0]) == 0


def test_equal_ngrams_get_equal_keys_and_order_matters():
    ids, offsets = _encode([["x", "y", "z"], ["x", "y", "z"], ["z", "y", "x"]])
    keys, _ = ngram_keys(ids, offsets, 3)
    assert keys[0] == keys[1] != keys[2]
    bi, _ = ngram_keys(ids, offsets, 2)
    assert len(set(bi.tolist())) == 4  # xy, yz, zy, yx


def test_whole_document_keys_identify_exact_sequences():
    docs = [["a", "b"], ["b", "a"], ["a", "b"], [], [], ["a"], ["a", "b", "c"]]
    keys = whole_sequence_keys(*_encode(docs))
    assert keys[0] == keys[2] and keys[3] == keys[4]
    assert len({int(keys[i]) for i in (0, 1, 3, 5, 6)}) == 5
