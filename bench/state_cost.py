"""``python -m bench.state_cost``: what a state write costs per model in steady state, in memory.

``--models`` models of the bench's 20-feature shape (``bench/inputs.py``) are fed ``--events``
events each through ``Pipeline.process`` (past every reference: the steady state), then
``StateStore.changes`` builds the records of every changed model, twice: once after the fill
and once after every model observed some more events, as at each ``state.snapshot_interval_s``
of a busy service. Printed: records, bytes, seconds, milliseconds and bytes per model. The
time is CPU in the service's loop (the tree, msgpack, compression, the HMAC when a key is set);
producing the records to Kafka comes on top, in librdkafka's thread.
"""

from __future__ import annotations

import argparse
import time

from bench.inputs import generate
from driftline.service.config import load_config
from driftline.service.pipeline import Pipeline
from driftline.service.state import Positions, StateStore


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--events", type=int, default=1500, help="per model (default 1500)")
    parser.add_argument("--hmac", action="store_true", help="sign the records")
    args = parser.parse_args()
    environ = {"DRIFTLINE_LIMITS__MAX_MODELS": str(max(args.models, 1000))}
    if args.hmac:
        environ["DRIFTLINE_STATE__HMAC_KEY"] = "0123456789abcdef0123456789abcdef"
    config = load_config(None, environ=environ)
    records = generate(args.models, args.events, topics=("p", "o"), partitions=1).records()
    pipeline = Pipeline(config)
    began = time.perf_counter()
    for start in range(0, len(records), 2000):
        pipeline.process(records[start : start + 2000])
    pipeline.flush()
    print(f"fed {len(records):,} records in {time.perf_counter() - began:.1f} s")
    store = StateStore(config, 1)
    positions: dict[int, Positions] = {0: {"prediction": len(records), "outcome": len(records)}}
    for label in ("first write", "next write"):
        began = time.perf_counter()
        out = store.changes(pipeline, positions)
        elapsed = time.perf_counter() - began
        size = sum(len(value or b"") for _, _, value in out)
        print(
            f"{label}: {len(out)} records, {size / 1e6:.1f} MB in {elapsed:.2f} s: "
            f"{elapsed / args.models * 1e3:.2f} ms and {size / args.models / 1e3:.0f} KB per model"
        )
        # Every model observes a little more before the next interval.
        more = records[: 4 * args.models]
        pipeline.process(more)
        pipeline.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
