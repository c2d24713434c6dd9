"""CLI: ``mix estimate`` and ``mix filter`` — the synthetic share of a data stream, offline.

    collapsewatch mix estimate --reference R --source S1 [--source S2] W.jsonl [--format json|table]
        [--semantic | --joined]
    collapsewatch mix filter --reference R --source S IN.jsonl --max-synthetic 0.1 \\
        --kept kept.jsonl [--dropped dropped.jsonl]

Sources are baseline files of known generators built against the same reference
(``collapsewatch baseline build``). Inputs are read like ``score``'s. ``filter`` writes JSONL
input lines unchanged (every field kept); other inputs become ``{"<field>": text}`` lines.
Exit codes: 0 done, 2 bad input (one line).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from service.cli import CliError
from service.cli.offline import _add_input_options, _load, read_all, read_documents


def _components(args: argparse.Namespace, joined: bool = False):
    """The mixture model of ``--reference`` and ``--source`` (with ``--semantic``, the
    embedding score too); with ``joined``, a ``metrics.mixture.JoinedMixture`` of both
    estimators built from the same profiles."""
    import metrics
    from metrics.mixture import JoinedMixture, MixtureConfig, MixtureModel

    reference = _load(args.reference, "reference")
    if reference.kind != "reference":
        raise CliError(f"reference file {args.reference} holds a {reference.kind}, not a reference")
    sources = []
    for path in args.source:
        profile = _load(path, "source")
        if profile.kind != "baseline":
            raise CliError(f"source file {path} holds a {profile.kind}; pass baseline files "
                           "(collapsewatch baseline build)")
        sources.append(profile)
    if args.semantic or joined:
        from service.cli.offline import _embedder

        reference.use_embedder(*_embedder())

    def model(semantic: bool) -> MixtureModel:
        return MixtureModel(reference, sources,
                            MixtureConfig(bootstrap=args.bootstrap, semantic=semantic))

    try:
        if joined:
            return JoinedMixture(model(False), model(True))
        return model(args.semantic)
    except metrics.MetricsError as exc:
        raise CliError(str(exc)) from None


def format_table(output: dict, model) -> str:
    share = output["synthetic_share"]
    ref = model.reference
    lines = [
        f"reference        {ref.name} ({ref.sha256[:12]})",
        f"documents        {output['documents']}",
        "",
        f"{'':<17}{'share':>7}  95% interval",
        f"{'synthetic':<17}{share['estimate']:>7.3f}  {share['low']:.3f} - {share['high']:.3f}",
    ]
    for name, s in share["by_source"].items():
        lines.append(f"{'  ' + name[:15]:<17}{s['estimate']:>7.3f}  {s['low']:.3f} - {s['high']:.3f}")
    human = max(0.0, 1.0 - share["estimate"] - share["unexplained"])
    lines += [
        f"{'unexplained':<17}{share['unexplained']:>7.3f}",
        f"{'human':<17}{human:>7.3f}",
        "",
        "unexplained = documents that fit neither the reference nor any source",
        f"scored by {share.get('scores', 'lexical')} scores",
    ]
    for scores, part in (share.get("parts") or {}).items():
        lines.append(f"  {scores + ':':<17}{part['estimate']:>6.3f}  {part['low']:.3f} - "
                     f"{part['high']:.3f}")
    return "\n".join(lines)


def cmd_estimate(args: argparse.Namespace) -> int:
    import metrics

    if args.joined and args.semantic:
        raise CliError("--joined estimates with and without the embedding score; "
                       "drop --semantic")
    model = _components(args, joined=args.joined)
    docs = read_all(args.inputs, args.field)
    try:
        if args.joined:
            # as streams get it by default, here over every document for both estimators
            share = model.estimate(docs)
            output = {"synthetic_share": share, "documents": share.pop("documents")}
        else:
            output = model.estimate(docs).to_dict()
    except metrics.MetricsError as exc:
        raise CliError(str(exc)) from None
    if args.format == "json":
        print(json.dumps(output, indent=2))
    else:
        print(format_table(output, model))
    return 0


def _read_lines(path: str, field: str) -> tuple[list[str], list[str]]:
    """(documents, the output line of each): the input line itself for JSONL, else a JSON
    object with the text under ``field``."""
    if path == "-":
        raw = sys.stdin.buffer.read()
        docs = read_documents("-", field, stdin=io.BytesIO(raw))
        text = raw.decode("utf-8-sig")
    else:
        docs = read_documents(path, field)
        text = Path(path).read_bytes().decode("utf-8-sig") if path.lower().endswith(".jsonl") \
            else None
    if text is not None:
        # read_documents takes one document from every non-blank line, in order
        lines = [line for line in text.splitlines() if line.strip()]
    else:
        lines = [json.dumps({field: doc}, ensure_ascii=False) for doc in docs]
    return docs, lines


def _write(path: str, lines: list[str]) -> None:
    out = Path(path)
    if not out.parent.is_dir():
        raise CliError(f"cannot write {path}: directory {out.parent} does not exist")
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def cmd_filter(args: argparse.Namespace) -> int:
    import metrics

    if not 0.0 <= args.max_synthetic <= 1.0:
        raise CliError(f"--max-synthetic must be between 0 and 1, got {args.max_synthetic}")
    outputs = [p for p in (args.kept, args.dropped) if p]
    if args.input != "-" and any(Path(p).resolve() == Path(args.input).resolve() for p in outputs):
        raise CliError("--kept/--dropped must not overwrite the input file")
    model = _components(args)
    docs, lines = _read_lines(args.input, args.field)
    if not docs:
        raise CliError(f"no documents in {args.input}")
    try:
        keep, expected, result = model.filter(docs, args.max_synthetic)
    except metrics.MetricsError as exc:
        raise CliError(str(exc)) from None
    _write(args.kept, [line for line, k in zip(lines, keep) if k])
    if args.dropped:
        _write(args.dropped, [line for line, k in zip(lines, keep) if not k])
    dropped = int((~keep).sum())
    print(
        f"kept {int(keep.sum())} of {len(docs)} documents, dropped {dropped}; expected "
        f"synthetic share of the kept set {expected:.3f} (target {args.max_synthetic:g}); "
        f"input synthetic share {result.estimate:.3f} (95% {result.low:.3f} - {result.high:.3f})"
    )
    return 0


def _bootstrap(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("--bootstrap must be >= 0")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", required=True, metavar="REF_FILE")
    p.add_argument("--source", required=True, action="append", metavar="BASE_FILE",
                   help="baseline file of a known generator (repeat for several)")
    _add_input_options(p)
    p.add_argument("--bootstrap", type=_bootstrap, default=200,
                   help="bootstrap replicates for the 95%% interval (default: 200)")
    p.add_argument("--semantic", action="store_true",
                   help="score documents by their embeddings too (profiles built with "
                        "embeddings; every document is embedded: separates better, slower)")


def register(sub) -> None:
    p = sub.add_parser("mix", help="synthetic share of a data stream (offline)")
    msub = p.add_subparsers(dest="mix_command", metavar="ACTION")
    msub.required = True
    e = msub.add_parser("estimate", help="share of a window written by the known sources")
    e.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=".jsonl, .txt, .csv or -; several files form one window")
    _common(e)
    e.add_argument("--format", choices=["json", "table"], default="json")
    e.add_argument("--joined", action="store_true",
                   help="both estimators, as streams get it by default: with and without the "
                        "embedding score (every document embedded); their midpoint and the "
                        "span of their intervals")
    e.set_defaults(func=cmd_estimate)

    f = msub.add_parser("filter", help="drop the documents most likely written by the sources")
    f.add_argument("input", metavar="INPUT", help=".jsonl, .txt, .csv or -")
    _common(f)
    f.add_argument("--max-synthetic", type=float, required=True, metavar="SHARE",
                   help="expected synthetic share of the kept set, at most (e.g. 0.1)")
    f.add_argument("--kept", required=True, metavar="OUT.jsonl")
    f.add_argument("--dropped", metavar="OUT.jsonl")
    f.set_defaults(func=cmd_filter)
