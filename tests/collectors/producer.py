"""A collector process for the tests: records ``count`` samples through the SDK.

Samples have ids ``<prefix><i>``. Every ``--checkpoint-every`` samples it calls ``flush()``
and, once that says everything is acknowledged or on the disk spool, writes ``i`` to the
checkpoint file. A restart continues after the checkpoint, so a kill -9 loses nothing: what
was recorded after the checkpoint is recorded again (same ids, stored once).

    python -m tests.collectors.producer --url URL --model M --count N --spool DIR --checkpoint F
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from collectors import Client


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--spool", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--prefix", default="r")
    p.add_argument("--rate", type=float, default=2000.0, help="samples per second")
    p.add_argument("--checkpoint-every", type=int, default=250)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    checkpoint = Path(args.checkpoint)
    start = int(checkpoint.read_text()) if checkpoint.exists() else 0
    client = Client(args.url, os.environ["COLLAPSEWATCH_INGEST_KEY"], args.model,
                    spool_dir=args.spool, batch_size=200, flush_interval=0.1,
                    backoff_base=0.05, backoff_max=0.5, timeout=5.0)
    print(json.dumps({"event": "started", "start": start,
                      "spool_pending": client.stats().spool_pending}), flush=True)
    began = time.monotonic()
    for i in range(start, args.count):
        client.record(f"sample {i} from the test producer", prompt="p",
                      id=f"{args.prefix}{i}", attributes={"i": i})
        done = i + 1
        if done % args.checkpoint_every == 0 or done == args.count:
            while not client.flush(30):
                pass
            tmp = checkpoint.with_suffix(".tmp")
            tmp.write_text(str(done))
            os.replace(tmp, checkpoint)
            print(json.dumps({"event": "checkpoint", "done": done,
                              **client.stats().as_dict()}), flush=True)
        ahead = (i - start + 1) / args.rate - (time.monotonic() - began)
        if ahead > 0:
            time.sleep(ahead)
    deadline = time.monotonic() + 120  # deliver the spool before leaving
    while client.stats().spool_pending and time.monotonic() < deadline:
        time.sleep(0.1)
    client.close(timeout=60)
    print(json.dumps({"event": "finished", **client.stats().as_dict()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
