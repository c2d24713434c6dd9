"""CLI: ``collapsewatch collect openai`` (prober), ``collect tail`` (log tailer), ``collect proxy``.

All push through the SDK (``collectors.Client``) with an on-disk spool, so samples survive
an unreachable collapsewatch and a restart of the collector. SIGTERM and SIGINT stop them
cleanly: the current samples are sent or spooled before exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import threading
from pathlib import Path

from service.cli import CliError

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_KEY_ENV = "COLLAPSEWATCH_INGEST_KEY"


def _configure_logging() -> None:
    from service.logging import configure
    from service.settings import get_settings

    settings = get_settings()
    configure(settings.log_level, settings.log_json)
    # one line per request from httpx would bury the collector's own log lines
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:100] or "default"


def _state_dir() -> Path:
    from service.settings import get_settings

    return get_settings().data_dir


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def _handler(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


def _check_sdk_arguments(args: argparse.Namespace) -> str:
    """The ingest key, after checking the SDK options (before anything starts)."""
    key = os.environ.get(args.collapsewatch_key_env)
    if not key:
        raise CliError(f"environment variable {args.collapsewatch_key_env} is not set; put an "
                       "ingest key there (create one with `collapsewatch keys create --scope "
                       "ingest`) or name another variable with --collapsewatch-key-env")
    if not 0 < args.sample_rate <= 1:
        raise CliError(f"--sample-rate must be in (0, 1], got {args.sample_rate}")
    if args.batch_size < 1:
        raise CliError("--batch-size must be at least 1")
    return key


def _client(args: argparse.Namespace, key: str, model: str, default_spool: Path):
    from collectors import Client, SpoolError

    spool = Path(args.spool_dir) if args.spool_dir else default_spool
    try:
        return Client(args.collapsewatch_url, key, model, spool_dir=spool,
                      sample_rate=args.sample_rate, batch_size=args.batch_size,
                      flush_at_exit=False)
    except SpoolError as exc:
        raise CliError(str(exc)) from None


def _add_sdk_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collapsewatch-url", default=os.environ.get("COLLAPSEWATCH_URL", DEFAULT_URL),
                   help="where collapsewatch runs (default: $COLLAPSEWATCH_URL or %(default)s)")
    p.add_argument("--collapsewatch-key-env", default=DEFAULT_KEY_ENV, metavar="VAR",
                   help="environment variable holding the ingest key (default: %(default)s)")
    p.add_argument("--spool-dir", default=None,
                   help="where unsent batches wait on disk (default: under "
                        "$COLLAPSEWATCH_DATA_DIR/spool/)")
    p.add_argument("--sample-rate", type=float, default=1.0,
                   help="keep this share of samples, chosen by a hash of their id (default 1)")
    p.add_argument("--batch-size", type=int, default=500, help=argparse.SUPPRESS)


# -- collect openai --------------------------------------------------------------------------
def cmd_openai(args: argparse.Namespace) -> int:
    from collectors.prober import (
        ENDPOINTS,
        OpenAIProber,
        ProbeFileError,
        load_probes,
        parse_duration,
    )

    try:
        every = parse_duration(args.every)
    except ValueError as exc:
        raise CliError(f"--every: {exc}") from None
    if args.samples_per_prompt < 1:
        raise CliError("--samples-per-prompt must be at least 1")
    if args.max_tokens < 1:
        raise CliError("--max-tokens must be at least 1")
    if args.endpoint not in ENDPOINTS:
        raise CliError(f"--endpoint must be one of {', '.join(ENDPOINTS)}")
    try:
        probes = load_probes(args.prompts)
    except ProbeFileError as exc:
        raise CliError(str(exc)) from None
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if api_key is None and args.api_key_env != "OPENAI_API_KEY":
            raise CliError(f"environment variable {args.api_key_env} (from --api-key-env) "
                           "is not set")
    monitored = args.monitored_model or args.model
    key = _check_sdk_arguments(args)
    _configure_logging()
    client = _client(args, key, monitored,
                     _state_dir() / "spool" / f"openai-{_slug(monitored)}")
    stop = _stop_on_signals()
    prober = OpenAIProber(
        args.base_url, args.model, probes, client, endpoint=args.endpoint,
        samples_per_prompt=args.samples_per_prompt, temperature=args.temperature,
        max_tokens=args.max_tokens, api_key=api_key, timeout=args.timeout,
        retries=args.retries, rate=args.rate, stop=stop)
    try:
        results = prober.run(every, once=args.once)
    finally:
        prober.close()
        durable = client.flush(args.flush_timeout)
        client.close(timeout=args.flush_timeout)
    failed = sum(r.failed for r in results)
    if args.once and (failed or not durable):
        return 1
    return 0


# -- collect tail ----------------------------------------------------------------------------
def cmd_tail(args: argparse.Namespace) -> int:
    from collectors.tail import LineFormat, Tailer

    path = Path(args.file).absolute()
    if path.is_dir():
        raise CliError(f"{path} is a directory; give the log file to follow")
    if args.once and not path.exists():
        raise CliError(f"{path} does not exist")
    fields = tuple(f for f in (args.attribute_fields or "").split(",") if f)
    line_format = LineFormat(text_field=args.field, prompt_field=args.prompt_field,
                             id_field=args.id_field, timestamp_field=args.timestamp_field,
                             attribute_fields=fields,
                             attributes={"source": "tail", "log": path.name})
    slug = _slug(str(path))
    state_file = Path(args.state_file) if args.state_file else \
        _state_dir() / "tail" / f"{_slug(args.model)}-{slug}.json"
    key = _check_sdk_arguments(args)
    _configure_logging()
    spool = _state_dir() / "spool" / f"tail-{_slug(args.model)}-{slug}"
    client = _client(args, key, args.model, spool)
    stop = _stop_on_signals()
    try:
        tailer = Tailer(path, client, state_file, line_format=line_format,
                        start_at=args.start_at, poll_interval=args.poll, stop=stop)
        stats = tailer.run(exit_at_eof=args.once)
    except ValueError as exc:  # an unreadable state file
        raise CliError(str(exc)) from None
    finally:
        client.close(timeout=args.flush_timeout)
    from service.logging import get_logger

    get_logger("collectors.tail").info("tailer stopped", extra=stats.as_dict())
    return 0


# -- collect proxy ---------------------------------------------------------------------------
def cmd_proxy(args: argparse.Namespace) -> int:
    from collectors.proxy import RecordingProxy, SdkRecorder, parse_listen, serve

    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not args.model and not args.model_from_response:
        raise CliError("name the monitored model with --model NAME, or take it from each "
                       "response with --model-from-response")
    key = _check_sdk_arguments(args)
    _configure_logging()
    root = Path(args.spool_dir) if args.spool_dir else _state_dir() / "spool" / "proxy"

    def client_for(model: str):
        from collectors import Client, SpoolError

        try:
            return Client(args.collapsewatch_url, key, model, spool_dir=root / _slug(model),
                          batch_size=args.batch_size, flush_at_exit=False)
        except SpoolError as exc:
            raise CliError(str(exc)) from None

    recorder = SdkRecorder(client_for)
    if args.model:
        recorder.client(args.model)  # a spool error shows before the proxy listens
    try:
        proxy = RecordingProxy(args.upstream, recorder, model=args.model,
                               model_from_response=args.model_from_response,
                               sample_rate=args.sample_rate, timeout=args.timeout)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        serve(proxy, host, port)
    finally:
        recorder.close(timeout=args.flush_timeout)
    return 0


def register(sub) -> None:
    p = sub.add_parser("collect", help="collectors: OpenAI-compatible prober, log tailer, "
                       "recording proxy")
    cs = p.add_subparsers(dest="collect_command", metavar="COLLECTOR")
    cs.required = True

    o = cs.add_parser("openai", help="ask an OpenAI-compatible endpoint a probe set on a schedule",
                      description="Ask an OpenAI-compatible endpoint a fixed probe set on a "
                      "schedule and push the answers to collapsewatch. Probe files: JSONL "
                      "({\"prompt\", \"id\", \"rare_topic\", \"topic\", \"system\", "
                      "\"attributes\"}) or text, one prompt per line, '[rare]' or "
                      "'[rare:TOPIC]' in front of rare-topic probes.")
    o.add_argument("--base-url", required=True,
                   help="the API root as OpenAI clients take it, e.g. http://127.0.0.1:8001/v1")
    o.add_argument("--model", required=True, help="model name sent to the endpoint")
    o.add_argument("--prompts", required=True, metavar="FILE", help="probe file")
    o.add_argument("--every", default="15m", help="time between round starts (default 15m)")
    o.add_argument("--samples-per-prompt", type=int, default=1, metavar="K")
    o.add_argument("--temperature", type=float, default=1.0)
    o.add_argument("--max-tokens", type=int, default=256)
    o.add_argument("--endpoint", default="chat", choices=["chat", "completions"])
    o.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable with the endpoint's API key (default "
                        "%(default)s; unset means no Authorization header)")
    o.add_argument("--monitored-model", default=None,
                   help="model name in collapsewatch (default: --model)")
    o.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default 60)")
    o.add_argument("--retries", type=int, default=3,
                   help="retries per call on 408/429/5xx and network errors (default 3)")
    o.add_argument("--rate", type=float, default=2.0,
                   help="at most this many calls per second; 0 = no limit (default 2)")
    o.add_argument("--once", action="store_true",
                   help="one round, then exit (1 if a call failed or samples were not "
                        "delivered or spooled)")
    o.add_argument("--flush-timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    _add_sdk_arguments(o)
    o.set_defaults(func=cmd_openai)

    t = cs.add_parser("tail", help="follow a JSONL log like tail -F",
                      description="Follow a JSONL log (rotation and truncation included) and "
                      "push one sample per line. The offset is saved after the samples are "
                      "durable, so a restart neither re-sends nor skips.")
    t.add_argument("file", metavar="FILE")
    t.add_argument("--model", required=True, help="monitored model name in collapsewatch")
    t.add_argument("--field", default="text", help="JSON field with the output (default text)")
    t.add_argument("--prompt-field", default=None, help="JSON field with the prompt")
    t.add_argument("--id-field", default=None,
                   help="JSON field with a unique id (default: derived from file and offset)")
    t.add_argument("--timestamp-field", default=None, help="JSON field with Unix seconds")
    t.add_argument("--attribute-fields", default=None, metavar="A,B",
                   help="JSON fields copied into the sample's attributes")
    t.add_argument("--state-file", default=None,
                   help="where the offset is kept (default: under $COLLAPSEWATCH_DATA_DIR/tail/)")
    t.add_argument("--start-at", default="beginning", choices=["beginning", "end"],
                   help="where to start in a file seen for the first time (default beginning)")
    t.add_argument("--poll", type=float, default=0.25, help="seconds between checks at the end")
    t.add_argument("--once", action="store_true",
                   help="read to the end of the file, save the offset and exit")
    t.add_argument("--flush-timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    _add_sdk_arguments(t)
    t.set_defaults(func=cmd_tail)

    x = cs.add_parser("proxy", help="forward OpenAI-compatible calls and record completions",
                      description="Forward OpenAI-compatible requests to --upstream unchanged "
                      "(streaming included) and record the completions of successful "
                      "/v1/chat/completions, /v1/completions and /v1/responses calls. Point "
                      "clients at it with OPENAI_BASE_URL=http://HOST:PORT/v1. Authorization "
                      "headers and API keys are forwarded, never logged or stored.")
    x.add_argument("--listen", default="127.0.0.1:8088", metavar="HOST:PORT",
                   help="where the proxy listens (default %(default)s)")
    x.add_argument("--upstream", required=True, metavar="URL",
                   help="the endpoint's base URL as OpenAI clients take it, e.g. "
                        "https://api.openai.com/v1")
    which = x.add_mutually_exclusive_group()
    which.add_argument("--model", default=None, help="monitored model name in collapsewatch")
    which.add_argument("--model-from-response", action="store_true",
                       help="record under the model name each response reports")
    x.add_argument("--timeout", type=float, default=600.0,
                   help="seconds to wait for the upstream (default 600)")
    x.add_argument("--flush-timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    _add_sdk_arguments(x)
    x.set_defaults(func=cmd_proxy)
