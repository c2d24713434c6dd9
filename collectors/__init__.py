"""Ways samples get into collapsewatch; importable without the server extras.

- :class:`Client`: the push SDK (``record()`` from the serving path; batching, retries and
  an on-disk spool in a background thread).
- :mod:`collectors.prober`: asks an OpenAI-compatible endpoint a fixed probe set on a schedule.
- :mod:`collectors.tail`: follows a JSONL log like ``tail -F``.

Only the standard library and httpx are used here.
"""

from collectors.client import Client, ClientStats, keeps
from collectors.spool import SpoolError

__all__ = ["Client", "ClientStats", "SpoolError", "keeps"]
