"""Scoring library (pure: numpy/scipy, no DB, no service code).

    profile = build_reference(documents, "news")          # frozen human reference
    baseline = build_baseline(outputs, profile, "v1")     # optional: known-good outputs
    result = score(window, profile, baseline)             # the DESIGN.md Score JSON
"""

from metrics import functional, synthetic
from metrics.config import ReferenceConfig, ScoreConfig, SuiteConfig
from metrics.errors import MetricsError, ProfileError, ReferenceTooSmall
from metrics.profile import FORMAT_VERSION, Profile, load_profile, save_profile
from metrics.reference import build_baseline, build_reference
from metrics.registry import REGISTRY, SIGNALS, MetricSpec
from metrics.scoring import HEALTH_STATES, score
from metrics.text import (
    TokenizerConfig,
    documents_sha256,
    normalize_documents,
    tokenize,
)

__all__ = [
    "FORMAT_VERSION",
    "HEALTH_STATES",
    "REGISTRY",
    "SIGNALS",
    "MetricSpec",
    "MetricsError",
    "Profile",
    "ProfileError",
    "ReferenceConfig",
    "ReferenceTooSmall",
    "ScoreConfig",
    "SuiteConfig",
    "TokenizerConfig",
    "build_baseline",
    "build_reference",
    "documents_sha256",
    "functional",
    "load_profile",
    "normalize_documents",
    "save_profile",
    "score",
    "synthetic",
    "tokenize",
]
