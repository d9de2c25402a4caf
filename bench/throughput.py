"""``make bench``: throughput, in-memory speed, alert latency and memory per model, in one run.

``make bench`` runs this inside ``deploy/with-broker.sh`` (which sets
``DRIFTLINE_BOOTSTRAP_SERVERS``) and writes ``bench/THROUGHPUT.md`` and ``bench/results.json``
(every figure of the markdown, machine-readable). The parts (``--only`` picks some):

1. ``broker``: through the real broker, at 5 models and at 1,000 models (20 features each; the
   1,000 at low traffic: 250 predictions + 250 outcomes each), the service's rate as a ratio to
   the raw ``Consumer.consume(2000)`` + ``orjson.loads`` loop timed in the same run
   (``bench/broker.py``);
2. ``inmemory``: ``Pipeline.process`` against the naive per-event implementation of
   ``bench/naive.py`` on the same messages, at both scales (``bench/inmemory.py``);
3. ``latency``: event produced -> alert received, p50/p99/max, with ``driftline run`` live and a
   producer at a steady rate below its capacity (``bench/latency.py``);
4. ``memory``: RSS per model in steady state at 1,000 and 10,000 models, whether 10,000 fit in
   4 GB, and RSS while the references fill with 1-event calls (``bench/memory.py``).

It prints PASS/FAIL for each floor (5 models >= 0.35 of raw; 1,000 models >= 0.25 of raw; in
memory >= 10x naive at 5 models and >= 3x at 1,000; <= 256 KiB RSS per model; 10,000 models in
<= 4 GB; alert latency p99 <= 1 s) and exits 0 (``--strict``: 1 when a floor of a part that ran
is not met). The machine is shared: only ratios within one run compare. Every service setting is
the default of ``load_config`` unless ``DRIFTLINE_PROCESSING__*`` is set in the environment
(passed on).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import broker, inmemory, inputs, latency, memory, report
from driftline.service.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("broker", "inmemory", "latency", "memory")

# name: (full default, --quick default, what it is)
SIZES: dict[str, tuple[Any, Any, str]] = {
    "models_small": (5, 5, "models of the small scale (broker, inmemory)"),
    "events_small": (40_000, 3_000, "predictions per model at the small scale"),
    "models_many": (1_000, 1_000, "models of the large scale (broker, inmemory)"),
    "events_many": (250, 20, "predictions per model at the large scale"),
    "latency_models": (5, 3, "models in the latency run (all but one degrade)"),
    "latency_events": (8_000, 6_500, "predictions per model in the latency run"),
    "latency_rate": (4_000.0, 6_000.0, "messages/s the latency producer sends"),
    "latency_change_at": (5_500, 5_200, "event of the first degradation (latency)"),
    "rss_models": ([1_000, 10_000], [20, 100], "model counts of the steady-state RSS runs"),
    "rss_events": (6_000, 6_000, "predictions per model to reach the steady state"),
    "rss_extra": (500, 500, "more events that must not grow RSS (first RSS run)"),
    "fill_models": (60, 5, "models of the reference-fill RSS runs"),
    "fill_checkpoints": (
        [1, 250, 1_000, 2_500, 4_900],
        [1, 200, 1_000],
        "events of the fill points",
    ),
    "rss_budget_s": ([600, 360], [60, 60], "seconds each steady-state RSS run may feed models"),
    "fill_budget_s": (300.0, 30.0, "seconds a fill RSS run may feed models"),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PART[,PART]",
        help=f"run only these parts, of {', '.join(PARTS)} (repeatable; default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--output", type=Path, help="write the markdown report here")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a floor of a part that ran is not met"
    )
    parser.add_argument(
        "--keep-topics", action="store_true", help="do not delete the topics the bench created"
    )
    parser.add_argument(
        "--partitions", type=int, default=2, help="partitions per input topic (default 2)"
    )
    g = parser.add_argument_group("sizes (defaults: full / --quick)")
    for name, (full, quick, text) in SIZES.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(full, list):
            shown = f"{' '.join(map(str, full))} / {' '.join(map(str, quick))}"
            g.add_argument(flag, type=int, nargs="+", metavar="N", help=f"{text}: {shown}")
        else:
            kind = type(full)
            g.add_argument(flag, type=kind, metavar="N", help=f"{text}: {full:g} / {quick:g}")
    g.add_argument(
        "--rss-batch", type=int, default=2000, metavar="N", help="events per call, RSS runs: 2000"
    )
    g.add_argument("--memory-jobs", type=int, default=2, metavar="N", help="RSS runs at a time: 2")
    args = parser.parse_args(argv)
    for name, (full, quick, _) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    parts = [p.strip() for item in args.only for p in item.split(",") if p.strip()]
    if len(args.rss_budget_s) != len(args.rss_models):
        parser.error("--rss-budget-s needs one value per --rss-models value")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    args.parts = [p for p in PARTS if p in parts] if parts else list(PARTS)
    return args


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def service_environ(
    bootstrap: str, names: dict[str, str], group: str, models: int
) -> dict[str, str]:
    environ = {**broker.service_settings(bootstrap, names, group), **passthrough()}
    if models > load_config(None, environ=environ).limits.max_models:
        environ["DRIFTLINE_LIMITS__MAX_MODELS"] = str(models)
    return environ


def passthrough() -> dict[str, str]:
    """Processing settings can be varied from outside, e.g. DRIFTLINE_PROCESSING__MAX_BUFFER_MS."""
    return {k: v for k, v in os.environ.items() if k.startswith("DRIFTLINE_PROCESSING__")}


def scale_stream(args: argparse.Namespace, run: str, models: int, events: int) -> Any:
    topics = (f"{run}.m{models}.predictions", f"{run}.m{models}.outcomes")
    changes = {models - 1: inputs.Change(events // 2)} if models <= 10 else {}
    return inputs.generate(
        models, events, topics=topics, partitions=args.partitions, changes=changes
    ), changes


def broker_scale(
    args: argparse.Namespace,
    bootstrap: str,
    run: str,
    stream: Any,
    changes: dict[int, inputs.Change],
) -> dict[str, Any]:
    models = len(stream.model_ids)
    names = {
        "predictions": stream.topics[0],
        "outcomes": stream.topics[1],
        **{k: f"{run}.m{models}.{k}" for k in ("alerts", "dead-letters", "model-kpis", "state")},
    }
    group = f"{run}.m{models}.service"
    environ = service_environ(bootstrap, names, group, models)
    broker.create_topics(
        bootstrap,
        {
            **dict.fromkeys(stream.topics, args.partitions),
            names["alerts"]: 1,
            names["dead-letters"]: 1,
            names["model-kpis"]: 1,
            names["state"]: args.partitions,
        },
        compacted=(names["state"],),
    )
    try:
        produce_s = broker.produce(bootstrap, stream)
        present = broker.end_offsets(bootstrap, stream.topics, args.partitions)
        if present != stream.total:
            raise RuntimeError(f"{present} messages in the topics, expected {stream.total}")
        log(f"{models} models: produced {stream.total:,} messages; raw consume")
        config = load_config(None, environ=environ)
        gc.collect()
        raw = broker.raw_rate(config, stream.topics, stream.total, f"{run}.m{models}.raw")
        log(f"{models} models: raw {raw.per_second:,.0f} msg/s; service")
        gc.collect()
        service = broker.service_rate(environ, stream.total)
        committed = broker.committed_total(bootstrap, group, stream.topics, args.partitions)
        log(
            f"{models} models: service {service.per_second:,.0f} msg/s "
            f"(ratio {service.per_second / raw.per_second:.3f})"
        )
    finally:
        if not args.keep_topics:
            broker.delete_topics(bootstrap, list(names.values()))
    service_dict = service.as_dict()
    return {
        "models": models,
        "events_per_model": stream.total // (2 * models),
        "messages": stream.total,
        "bytes_per_message": round(stream.bytes / stream.total, 1),
        "partitions": args.partitions,
        "produce_s": round(produce_s, 2),
        "changes": describe_changes(stream, changes),
        "raw": raw.as_dict(),
        "service": service_dict,
        "ratio": round(service.per_second / raw.per_second, 4),
        "ratio_from_start": round(
            (stream.total / service.extra["from_start_s"]) / raw.per_second, 4
        ),
        "committed": committed,
        "max_models_override": environ.get("DRIFTLINE_LIMITS__MAX_MODELS"),
    }


def describe_changes(stream: Any, changes: dict[int, inputs.Change]) -> str:
    if not changes:
        return "All models stationary (too few events per model to fill a reference)."
    return " ".join(
        f"Model `{stream.model_ids[k]}` loses accuracy (0.90 → {c.accuracy}) and shifts "
        f"n01_normal by {c.shift} sd from event {c.at:,}, so alerts are produced too."
        for k, c in changes.items()
    )


def inmemory_scale(stream: Any) -> dict[str, Any]:
    models = len(stream.model_ids)
    records = stream.records()
    environ = passthrough()
    if models > load_config(None, environ=environ).limits.max_models:
        environ["DRIFTLINE_LIMITS__MAX_MODELS"] = str(models)
    log(f"{models} models: Pipeline.process in memory")
    pipeline = inmemory.pipeline_rate(environ, records)
    log(f"{models} models: pipeline {pipeline.per_second:,.0f} msg/s; naive")
    naive = inmemory.naive_rate(records)
    ratio = pipeline.per_second / naive.per_second
    log(f"{models} models: naive {naive.per_second:,.0f} msg/s; ratio {ratio:.2f}")
    return {
        "models": models,
        "messages": len(records),
        "pipeline": pipeline.as_dict(),
        "naive": naive.as_dict(),
        "ratio": round(ratio, 3),
    }


def guarded(results: dict[str, Any], part: str, fn: Callable[[], Any]) -> Any:
    """Run one part; a failure is reported and the other parts still run."""
    try:
        return fn()
    except Exception as exc:
        traceback.print_exc()
        results.setdefault("errors", {})[part] = f"{type(exc).__name__}: {exc}"[:2000]
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    bootstrap = os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    run = f"bench-{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    results: dict[str, Any] = {
        "run_id": run,
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "argv": sys.argv[1:] if argv is None else argv,
        "parts": args.parts,
        "params": {
            name: getattr(args, name)
            for name in (*SIZES, "rss_batch", "memory_jobs", "partitions", "quick")
        },
        "machine": report.machine(),
        "load_average": {"start": report.load_average()},
        "bootstrap": bootstrap,
    }
    config = load_config(None, environ=passthrough())
    results["config"] = {
        "processing": config.processing.model_dump(mode="json"),
        "overrides": passthrough(),
    }
    log(f"{run} on {bootstrap}; parts {', '.join(args.parts)}")

    if "broker" in args.parts or "inmemory" in args.parts:
        for models, events in (
            (args.models_small, args.events_small),
            (args.models_many, args.events_many),
        ):
            log(f"{models} models x {events:,} events: building the input")
            results["load_average"][f"{models} models"] = report.load_average()
            t = time.perf_counter()
            stream, changes = scale_stream(args, run, models, events)
            log(f"built {stream.total:,} messages in {time.perf_counter() - t:.1f} s")
            if "broker" in args.parts:
                scale = guarded(
                    results, "broker", partial(broker_scale, args, bootstrap, run, stream, changes)
                )
                if scale is not None:
                    results.setdefault("broker", {"scales": []})["scales"].append(scale)
            if "inmemory" in args.parts:
                scale = guarded(results, "inmemory", partial(inmemory_scale, stream))
                if scale is not None:
                    results.setdefault("inmemory", {"scales": []})["scales"].append(scale)
            del stream
            gc.collect()

    if "latency" in args.parts:
        results["load_average"]["latency"] = report.load_average()
        log(
            f"latency: {args.latency_models} models x {args.latency_events:,} events at "
            f"{args.latency_rate:,.0f} msg/s, service live"
        )
        lat = guarded(
            results,
            "latency",
            lambda: latency.run(
                bootstrap,
                run_id=run,
                models=args.latency_models,
                events=args.latency_events,
                rate=args.latency_rate,
                change_at=args.latency_change_at,
                keep_topics=args.keep_topics,
            ),
        )
        if lat is not None:
            small = next(
                (
                    s
                    for s in results.get("broker", {}).get("scales", [])
                    if s["models"] == args.models_small
                ),
                None,
            )
            if small is not None:
                capacity = small["service"]["per_second"]
                lat["capacity_fraction"] = round(args.latency_rate / capacity, 3)
                lat["capacity_note"] = (
                    f"That is {100 * args.latency_rate / capacity:.0f}% of the service's "
                    f"backlog rate at {args.models_small} models in part 1. "
                )
            results["latency"] = lat
            a = lat["alerts"]
            log(f"latency: {a['count']} alerts, p50 {a['p50_s']} s, p99 {a['p99_s']} s")

    if "memory" in args.parts:
        results["load_average"]["memory"] = report.load_average()
        log(
            f"memory: steady state at {args.rss_models} models, fill with {args.fill_models} "
            f"models ({args.memory_jobs} children at a time)"
        )
        mem = guarded(
            results,
            "memory",
            lambda: memory.run(
                models=args.rss_models,
                events=args.rss_events,
                extra=args.rss_extra,
                batch=args.rss_batch,
                fill_models=args.fill_models,
                checkpoints=args.fill_checkpoints,
                budgets_s=args.rss_budget_s,
                fill_budget_s=args.fill_budget_s,
                jobs=args.memory_jobs,
                fit_models=report.FIT_MODELS,
                fit_bytes=report.FIT_BYTES,
            ),
        )
        if mem is not None:
            results["memory"] = mem
            for s in mem["steady"]:
                if "error" in s:
                    results.setdefault("errors", {})[f"memory {s['models_requested']}"] = s["error"]

    results["load_average"]["end"] = report.load_average()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    results["floors"] = report.floors(results)
    text = report.render(results)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for f in results["floors"]:
        print(f"{f['status']:<10} {f['label']}: {f['shown']} (required {f['floor']})")
    met = sum(f["status"] == "PASS" for f in results["floors"])
    written = ", ".join(str(p) for p in (args.output, args.json) if p) or "nothing"
    print(
        f"bench: {met} of {len(results['floors'])} floors met in {results['wall_s']:.0f} s"
        + (" (quick mode)" if args.quick else "")
        + f"; wrote {written}"
    )
    failed = any(f["status"] in ("FAIL", "ERROR", "INCOMPLETE") for f in results["floors"])
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
