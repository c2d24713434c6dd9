"""Ways samples get into collapsewatch; importable without the server extras.

- :class:`Client`: the push SDK (``record()`` from the serving path; batching, retries and
  an on-disk spool in a background thread).
- :mod:`collectors.prober`: asks an OpenAI-compatible endpoint a fixed probe set on a schedule.
- :mod:`collectors.tail`: follows a JSONL log like ``tail -F``.
- :mod:`collectors.proxy`: a recording proxy in front of an OpenAI-compatible endpoint.
- :mod:`collectors.otlp`: OTLP trace requests → samples (GenAI and OpenInference LLM spans);
  needs the ``otel`` extra (opentelemetry-proto).

Only the standard library and httpx (with its h11) are used here, apart from ``otlp``.
"""

from collectors.client import Client, ClientStats, keeps
from collectors.spool import SpoolError

__all__ = ["Client", "ClientStats", "SpoolError", "keeps"]
