"""CLI: reference build, score, baseline build — offline, no server or database needed.

Inputs: ``.jsonl`` (one JSON object per line, field ``text`` or ``--field``), ``.txt`` (one
document per non-blank line), ``.csv`` (header row, column ``text`` or ``--field``), or
``-`` for JSONL on stdin. Exit codes: 0 done, 1 ``--fail-on`` met, 2 bad input (one line).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from service.cli import CliError
from service.domain.documents import DocumentParseError, parse_documents
from service.logging import get_logger
from service.settings import get_settings

log = get_logger("collapsewatch.cli")

FORMATS = (".jsonl", ".txt", ".csv")
SEVERITY = {"insufficient_data": 0, "healthy": 0, "early_collapse": 1, "collapse": 2}


# ---------------------------------------------------------------------------- input


def read_documents(path: str, field: str = "text", stdin: io.BufferedReader | None = None) -> list[str]:
    """Documents of one input (see module docstring), read by the same reader as uploads to
    the server (``service.domain.documents``). Raises CliError on bad input."""
    if path == "-":
        raw, fmt, source = (stdin or sys.stdin.buffer).read(), "jsonl", "standard input"
    else:
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix not in FORMATS:
            raise CliError(
                f"{path}: unsupported input format {suffix or '(no extension)'!r}; "
                "use .jsonl, .txt, .csv or - (JSONL on stdin)"
            )
        if not p.is_file():
            raise CliError(f"input file {path} does not exist")
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}") from None
        fmt, source = suffix[1:], path
    try:
        # offline scoring takes any text: no storability or length limits here
        return parse_documents(raw, fmt, field, storable=False,
                               field_hint="choose another one with --field")
    except DocumentParseError as exc:
        raise CliError(f"{source}: {exc}") from None


def probe_answers(path: str, field: str) -> list[tuple[str, str]]:
    """(probe topic, text) of the rare-topic probe answers in a .jsonl input: lines whose
    ``attributes`` carry ``"rare_topic": true`` (as ``collapsewatch collect openai`` writes
    them), topic from ``attributes.topic``. Other formats and stdin carry no attributes.
    Called after :func:`read_documents` accepted the file, so every line parses."""
    if path == "-" or Path(path).suffix.lower() != ".jsonl":
        return []
    out = []
    for line in Path(path).read_bytes().decode("utf-8-sig").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        attrs = row.get("attributes") if isinstance(row, dict) else None
        if isinstance(attrs, dict) and attrs.get("rare_topic") is True:
            out.append((attrs.get("topic"), row[field]))
    if any(not topic for topic, _ in out):
        # imported only when needed: service.domain.probes brings in the database layer
        from service.domain.probes import UNNAMED

        out = [(str(topic or UNNAMED), text) for topic, text in out]
    return [(str(topic), text) for topic, text in out]


def read_all(paths: Sequence[str], field: str) -> list[str]:
    if list(paths).count("-") > 1:
        raise CliError("standard input (-) can be given only once")
    docs: list[str] = []
    for path in paths:
        docs.extend(read_documents(path, field))
    if not docs:
        raise CliError(f"no documents in {', '.join(paths)}")
    return docs


def _load(path: str, what: str, band_context: str | None = None):
    """Read a profile file; with ``band_context`` its bands are kept in the band cache
    directory (keyed like the server's band cache: profile bytes, code, context)."""
    import metrics

    p = Path(path)
    if not p.is_file():
        raise CliError(f"{what} file {path} does not exist")
    try:
        data = p.read_bytes()
        profile = metrics.Profile.from_bytes(data)
    except metrics.ProfileError as exc:
        raise CliError(f"{what} file {path}: {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot read {what} file {path}: {exc.strerror}") from None
    if profile.stale_band_sizes:
        sizes = ", ".join(map(str, profile.stale_band_sizes))
        print(f"collapsewatch: warning: {what} file {path}: its stored bands ({sizes} "
              f"documents) were computed by an older metric suite and are ignored, so bands "
              f"are computed on first use; build the {what} again to store them",
              file=sys.stderr)
    root = band_cache_dir()
    if band_context is not None and root is not None:
        from metrics.band_cache_dir import DirectoryBandStore, band_key
        from service import __version__

        # the server's band cache key (service.domain.band_cache.profile_key), without
        # importing the database layer
        profile.band_store = DirectoryBandStore(root, band_key(data, band_context, __version__))
    return profile


def _embedder():
    """The embedding model exactly as the worker gets it (``COLLAPSEWATCH_EMBEDDING_MODEL``
    and ``_TOKENIZER``, else the pinned default): (embedder, None) or (None, why). A model
    configured but unloadable is a one-line error, not a silently lexical profile; without
    a configured model and without the default one, scoring stays lexical (as the worker).
    With the embedding cache on (:func:`embedding_cache_dir`), vectors of texts embedded
    before are read from it and the model is loaded only for new texts."""
    settings = get_settings()
    cache = embedding_cache_dir()
    if cache is None:
        from service.domain.profiles import configured_embedder

        embedder, reason = configured_embedder()
    else:
        from metrics.embedding import cached_embedder

        # one per command: its hit and miss counts are that command's
        embedder, reason = cached_embedder(settings.embedding_model,
                                           settings.embedding_tokenizer, cache)
    if embedder is None and (settings.embedding_model is not None
                             or settings.embedding_tokenizer is not None):
        raise CliError(f"COLLAPSEWATCH_EMBEDDING_MODEL: {reason}")
    return embedder, reason


def _cache_dir(setting: str, name: str) -> Path | None:
    """``COLLAPSEWATCH_<setting>`` if set (``off`` disables the cache), else
    ``$XDG_CACHE_HOME/collapsewatch/<name>`` (``~/.cache/...``)."""
    import os

    explicit = os.environ.get(f"COLLAPSEWATCH_{setting}")
    if explicit:
        return None if explicit.lower() == "off" else Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "collapsewatch" / name


def band_cache_dir() -> Path | None:
    """Where the CLI keeps computed bands: ``COLLAPSEWATCH_BAND_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/collapsewatch/bands`` (``~/.cache/...``); the value ``off`` disables it."""
    return _cache_dir("BAND_CACHE_DIR", "bands")


def embedding_cache_dir() -> Path | None:
    """Where the CLI keeps window embeddings: ``COLLAPSEWATCH_EMBEDDING_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/collapsewatch/embeddings`` (``~/.cache/...``); ``off`` disables it."""
    return _cache_dir("EMBEDDING_CACHE_DIR", "embeddings")


def _log_embedding_cache(embedder) -> None:
    cache = getattr(embedder, "cache", None)
    if cache is not None:
        log.info("embedding cache", extra={
            "hits": cache.hits, "misses": cache.misses, "writes": cache.writes,
            "model_loaded": embedder.model_loads > 0, "cache_dir": str(cache.dir)})


def _save(profile, path: str) -> None:
    import metrics

    out = Path(path)
    if not out.parent.is_dir():
        raise CliError(f"cannot write {path}: directory {out.parent} does not exist")
    try:
        metrics.save_profile(profile, out)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _band_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 100,500,2000, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError("band sizes must be positive")
    return sizes


# ---------------------------------------------------------------------------- output


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def format_table(result: dict) -> str:
    """The Score JSON as a table for a person: metric, value, human band, ratio, marker."""
    ref = result["reference"]
    base = result.get("baseline")
    lines = [
        f"reference  {ref['name']} ({ref['sha256'][:12]})",
        f"baseline   {base['name']} ({base['sha256'][:12]})" if base else "baseline   none",
        (
            f"window     {result['documents']} documents, {result['tokens']} tokens "
            f"(token budget {result.get('token_budget', '-')})"
        ),
        f"health     {result['health'].upper()}",
        "",
    ]
    with_base = base is not None
    head = f"{'signal':<16}{'ratio':>8}  {'human band':<19}"
    if with_base:
        head += f"{'vs baseline':>12}  {'baseline band':<19}"
    lines.append(head)
    for name, sig in result["signals"].items():
        row = (
            f"{name:<16}{_fmt(sig['ratio'], 3):>8}  "
            f"{_fmt(sig.get('human_low'), 3) + ' - ' + _fmt(sig.get('human_high'), 3):<19}"
        )
        if with_base:
            row += (
                f"{_fmt(sig.get('baseline_ratio'), 3):>12}  "
                f"{_fmt(sig.get('baseline_low'), 3) + ' - ' + _fmt(sig.get('baseline_high'), 3):<19}"
            )
        marks = ("!" if sig["outside_band"] else "") + ("B" if sig.get("outside_baseline_band") else "")
        lines.append(row + marks)
    lines.append("")
    head = f"{'metric':<22}{'value':>10}  {'human band (low - high)':<23}{'mean':>10}{'ratio':>8}{'pctl':>6}"
    if with_base:
        head += f"{'vs base':>9}"
    lines.append(head)
    for name, m in result["metrics"].items():
        band = _fmt(m["human_low"]) + " - " + _fmt(m["human_high"])
        pct = "-" if m["percentile"] is None else f"{m['percentile']:.2f}"
        row = (
            f"{name:<22}{_fmt(m['value']):>10}  {band:<23}{_fmt(m['human_mean']):>10}"
            f"{_fmt(m['ratio'], 3):>8}{pct:>6}"
        )
        if with_base:
            row += f"{_fmt(m.get('baseline_ratio'), 3):>9}"
        marks = ("!" if m["outside_band"] else "") + ("B" if m.get("outside_baseline_band") else "")
        lines.append(row + ("  " + marks if marks else ""))
    lines += [
        "",
        (
            "ratio = value / human band mean (duplicate rates: shares of distinct documents); "
            "! = outside the human band, B = outside the baseline band"
        ),
    ]
    if result.get("evidence") and "overrepresented" in result["evidence"]:
        lines += ["", *format_evidence(result["evidence"])]
    return "\n".join(lines)


def _quoted(text: str, width: int = 90) -> str:
    return '"' + (text if len(text) <= width else text[: width - 1] + "…") + '"'


def format_evidence(evidence: dict, top: int = 5) -> list[str]:
    """The top ``top`` entries of each evidence list (metrics.evidence), as table lines."""
    against = evidence.get("against", "reference")
    lines = [f"what changed (against the {against})"]
    over = evidence["overrepresented"][:top]
    lines.append(f"{'over-represented n-gram':<36}{'per 10k':>9}{'before':>9}{'z':>7}")
    lines += [
        f"  {e['ngram'][:33]:<34}{e['window_per_10k']:>9.1f}{e['baseline_per_10k']:>9.1f}"
        f"{e['z']:>7.1f}"
        for e in over
    ] or ["  none (no n-gram rose significantly)"]
    lines.append(f"{'vanished term':<36}{'expected':>9}{'seen':>9}")
    lines += [f"  {e['term'][:33]:<34}{e['expected']:>9.1f}{e['observed']:>9}"
              for e in evidence["vanished"][:top]] or ["  none"]
    lines.append("near-duplicate groups")
    lines += [
        f"  {g['size']} documents ({g['share']:.1%})"
        + (": " + _quoted(g["examples"][0]) if g["examples"] else "")
        for g in evidence["duplicates"][:top]
    ] or ["  none"]
    probes = evidence.get("probe_topics") or []
    if probes:
        lines.append("rare-topic probes")
        lines += [f"  {entry['summary']}" for entry in probes[:top]]
    examples = evidence.get("examples") or {}
    for side, label in (("most_typical", "most typical"), ("least_typical", "least typical")):
        shown = examples.get(side) or []
        if shown:
            lines.append(f"{label} (reference LM)")
            lines += [f"  {e['nll']:.2f} nats/token  {_quoted(e['text'], 70)}" for e in shown]
    return lines


# ---------------------------------------------------------------------------- commands


def cmd_reference_build(args: argparse.Namespace) -> int:
    import metrics

    docs = read_all(args.inputs, args.field)
    cfg = metrics.ReferenceConfig(
        band_sizes=args.band_sizes, min_documents=args.min_documents, replicates=args.replicates
    )
    try:
        profile = metrics.build_reference(docs, args.name, config=cfg,
                                          embedder=_embedder()[0])
    except metrics.MetricsError as exc:
        raise CliError(str(exc)) from None
    _save(profile, args.output)
    log.info("reference built", extra={"reference": profile.name, "sha256": profile.sha256})
    print(
        f"wrote {args.output}: reference {profile.name!r} sha256 {profile.sha256}, "
        f"{profile.document_count} documents, {profile.token_count} tokens, "
        f"bands stored for {', '.join(map(str, sorted({n for n, _ in profile.stored_bands}))) or 'no'} "
        f"window sizes"
    )
    return 0


def cmd_baseline_build(args: argparse.Namespace) -> int:
    import metrics

    reference = _load(args.reference, "reference")
    embedder = _embedder()
    reference.use_embedder(*embedder)
    docs = read_all(args.inputs, args.field)
    cfg = metrics.ReferenceConfig(
        band_sizes=args.band_sizes, min_documents=args.min_documents,
        replicates=reference.config.replicates, seed=reference.config.seed,
    )
    try:
        baseline = metrics.build_baseline(docs, reference, args.name, config=cfg,
                                          embedder=embedder[0])
    except metrics.MetricsError as exc:
        raise CliError(str(exc)) from None
    _save(baseline, args.output)
    ratios = ", ".join(
        f"{name} {_fmt(value, 2)} x human" for name, value in (baseline.human_ratios or {}).items()
    )
    log.info("baseline built", extra={"baseline": baseline.name, "sha256": baseline.sha256})
    print(
        f"wrote {args.output}: baseline {baseline.name!r} sha256 {baseline.sha256}, "
        f"{baseline.document_count} documents, against reference {reference.name!r}; {ratios}"
    )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import metrics.semantic
    from metrics.embedding import EmbedderUnavailable

    reference = _load(args.reference, "reference", band_context="reference")
    baseline = (_load(args.baseline, "baseline",
                      band_context=f"baseline of reference {reference.sha256}")
                if args.baseline else None)
    if baseline is not None and baseline.kind != "baseline":
        raise CliError(f"baseline file {args.baseline} holds a {baseline.kind}, not a baseline")
    if reference.kind != "reference":
        raise CliError(f"reference file {args.reference} holds a {reference.kind}, not a reference")
    if reference.semantic is not None:
        # a reference without embeddings scores lexically whatever the model: not loaded
        reference.use_embedder(*_embedder())
    if args.inputs.count("-") > 1:
        raise CliError("standard input (-) can be given only once")
    # read every file first: a bad last file fails before minutes of scoring
    windows = [read_all([path], args.field) for path in args.inputs]
    quote = get_settings().evidence_text and not args.no_evidence_text
    try:
        config = metrics.ScoreConfig(interpolate_bands=not args.exact_bands)
        results = [metrics.score(docs, reference, baseline, config=config, evidence_text=quote)
                   for docs in windows]
        for path, result in zip(args.inputs, results, strict=True):
            # a window's rare-topic probe answers: where they land (no baseline answers
            # offline: a baseline file keeps no attributes)
            entries = metrics.semantic.probe_topics(reference, probe_answers(path, args.field))
            if entries is not None and isinstance(result.get("evidence"), dict):
                result["evidence"]["probe_topics"] = entries
    except metrics.MetricsError as exc:
        raise CliError(str(exc)) from None
    except EmbedderUnavailable as exc:  # a cached model that no longer loads
        raise CliError(f"embedding model: {exc}") from None
    _log_embedding_cache(reference.embedder)
    if len(results) == 1:
        output, health = results[0], results[0]["health"]
    else:
        output = sequence_result(results)
        health = output["health"]
    if args.format == "json":
        print(json.dumps(output, indent=2))
    elif len(results) == 1:
        print(format_table(output))
    else:
        print(format_sequence_table(output, args.inputs))
    if args.fail_on and SEVERITY[health] >= SEVERITY[args.fail_on]:
        return 1
    return 0


def sequence_result(results: list[dict]) -> dict:
    """Consecutive windows (oldest first) with the sequential detector: each window gets
    the trend over the windows up to it and its health with the trend; the final health
    is the last window's."""
    from metrics.trend import trend, trend_health

    windows = []
    for i, result in enumerate(results):
        state = trend(results[: i + 1])
        windows.append({**result, "health": trend_health(result["health"], state),
                        "trend": state})
    return {"windows": windows, "health": windows[-1]["health"], "trend": windows[-1]["trend"]}


def format_sequence_table(output: dict, names: Sequence[str]) -> str:
    """One row per window: health, signal ratios (to the baseline when there is one) with
    z, and the detector's statistic; then the alarms in words."""
    from metrics.trend import describe

    signals = list(output["trend"])
    head = f"{'#':>3}  {'window':<24}{'docs':>6}  {'health':<15}"
    head += "".join(f"{name + ' (z)':>22}" for name in signals)
    head += "".join(f"{'cusum ' + name[:4]:>12}" for name in signals)
    lines = [head]
    for i, (name, w) in enumerate(zip(names, output["windows"]), start=1):
        row = f"{i:>3}  {Path(name).name[:23]:<24}{w['documents']:>6}  {w['health']:<15}"
        for sig in signals:
            entry = w["signals"][sig]
            ratio = entry.get("baseline_ratio") if entry.get("z_against") == "baseline" \
                else entry.get("ratio")
            z = entry.get("z")
            row += f"{_fmt(ratio, 3) + ' (' + ('-' if z is None else f'{z:+.1f}') + ')':>22}"
        for sig in signals:
            t = w["trend"][sig]
            row += f"{_fmt(t['statistic'], 2) + ('*' if t['alarm'] else ' '):>12}"
        lines.append(row)
    threshold = next(iter(output["trend"].values()))["threshold"] if signals else None
    lines += ["", f"health     {output['health'].upper()}"]
    alarms = describe(output["trend"])
    lines += [f"alarm      {text}" for text in alarms] or ["alarm      none"]
    lines += ["", (f"ratio = to the baseline when there is one, else to human; z = standardised "
                  f"deviation from that band; cusum = sequential statistic (* = above "
                  f"{threshold}, a sustained shift)")]
    return "\n".join(lines)


def _add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--field", default="text",
                   help="JSONL field / CSV column holding the text (default: text)")


# stored band sizes of `reference build`: a geometric grid at most 2.5x apart from the
# smallest scored window (ScoreConfig.min_documents, 50), so a window of 50-2,000 documents
# gets an interpolated band (metrics.bands.GRID_RATIO_LIMIT) and a larger one an extended band
DEFAULT_BAND_SIZES = (50, 100, 200, 500, 1000, 2000)


def register(sub) -> None:
    p = sub.add_parser("reference", help="frozen human references (offline)")
    rsub = p.add_subparsers(dest="reference_command", metavar="ACTION")
    rsub.required = True
    b = rsub.add_parser("build", help="build a reference file from human documents")
    b.add_argument("inputs", nargs="+", metavar="INPUT", help=".jsonl, .txt, .csv or -")
    b.add_argument("--name", required=True)
    b.add_argument("-o", "--output", required=True, metavar="REF_FILE")
    _add_input_options(b)
    b.add_argument("--band-sizes", type=_band_sizes, default=DEFAULT_BAND_SIZES,
                   help="window sizes whose human bands are stored in the file (default: "
                        f"{','.join(map(str, DEFAULT_BAND_SIZES))}; a size between two of "
                        "them is interpolated, a larger one extended from the largest, "
                        "others are computed on first use)")
    b.add_argument("--min-documents", type=int, default=200,
                   help="refuse to build from fewer documents (default: 200)")
    b.add_argument("--replicates", type=_positive, default=200,
                   help="random samples per human band (default: 200; baselines built "
                        "against this reference use the same)")
    b.set_defaults(func=cmd_reference_build)

    p = sub.add_parser("baseline", help="frozen model-output baselines (offline)")
    bsub = p.add_subparsers(dest="baseline_command", metavar="ACTION")
    bsub.required = True
    b = bsub.add_parser("build", help="build a baseline file from known-good model outputs")
    b.add_argument("inputs", nargs="+", metavar="INPUT", help=".jsonl, .txt, .csv or -")
    b.add_argument("--reference", required=True, metavar="REF_FILE")
    b.add_argument("--name", required=True)
    b.add_argument("-o", "--output", required=True, metavar="BASE_FILE")
    _add_input_options(b)
    b.add_argument("--band-sizes", type=_band_sizes, default=(),
                   help="extra window sizes whose baseline bands are stored in the file")
    b.add_argument("--min-documents", type=int, default=200,
                   help="refuse to build from fewer documents (default: 200)")
    b.set_defaults(func=cmd_baseline_build)

    s = sub.add_parser("score", help="score windows of model outputs against a reference")
    s.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=".jsonl, .txt, .csv or -; several = consecutive windows, oldest first")
    s.add_argument("--reference", required=True, metavar="REF_FILE")
    s.add_argument("--baseline", metavar="BASE_FILE")
    _add_input_options(s)
    s.add_argument("--format", choices=["json", "table"], default="json")
    s.add_argument("--no-evidence-text", action="store_true",
                   help="evidence without quoted sample text (duplicate groups and typical "
                        "examples); also COLLAPSEWATCH_EVIDENCE_TEXT=off")
    s.add_argument("--exact-bands", action="store_true",
                   help="compute the band of a window size the files do not store, instead "
                        "of interpolating it between two stored sizes or extending the "
                        "largest (seconds instead of milliseconds; see "
                        "docs/early-warning.md, Interpolated bands, Extended bands)")
    s.add_argument("--fail-on", choices=["early_collapse", "collapse"],
                   help="exit 1 when health (the last window's, with the trend) is at "
                        "least this bad")
    s.set_defaults(func=cmd_score)
