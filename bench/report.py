"""The bench's report: the machine, the floors, and ``THROUGHPUT.md`` rendered from the results.

Every figure of the markdown is read from the results dict that is also written as JSON, so the
two never disagree.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import confluent_kafka
import numpy as np
import orjson

from bench.memory import FILL_TOLERANCE, FILL_TOLERANCE_KIB

ROOT = Path(__file__).resolve().parents[1]
KIB_FLOOR = 256  # RSS per model, KiB
FIT_BYTES = 4e9  # 10,000 models in 4 GB (decimal: 4.0e9 bytes = 3,815 MiB), peak RSS of the process
FIT_MODELS = 10_000
LATENCY_P99_S = 1.0


def machine() -> dict[str, Any]:
    cpu = "unknown"
    memory_gib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    jars = sorted(ROOT.glob("deploy/kafka/.cache/lib-*/kafka-clients-*.jar"))
    kafka = jars[-1].name.removeprefix("kafka-clients-").removesuffix(".jar") if jars else "?"
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "numpy": np.__version__,
        "orjson": orjson.__version__,
        "broker": f"local single-node Apache Kafka {kafka} (KRaft), deploy/kafka/broker.sh",
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# -- floors ------------------------------------------------------------------------------------


def _floor(
    key: str, label: str, *, floor: str, value: Any, shown: str, ok: bool | None
) -> dict[str, Any]:
    status = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
    return {
        "key": key,
        "label": label,
        "floor": floor,
        "value": value,
        "shown": shown,
        "status": status,
    }


def floors(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every floor, whether or not its part ran (SKIP), failed (ERROR) or finished."""
    params = results["params"]
    out = []
    broker = {s["models"]: s for s in results.get("broker", {}).get("scales", [])}
    inmem = {s["models"]: s for s in results.get("inmemory", {}).get("scales", [])}
    small, many = params["models_small"], params["models_many"]
    for models, floor in ((small, 0.35), (many, 0.25)):
        ratio = broker.get(models, {}).get("ratio")
        out.append(
            _floor(
                f"broker_{models}",
                f"service through the broker, {models:,} models: ratio to raw",
                floor=f"≥ {floor:.2f}",
                value=ratio,
                shown="—" if ratio is None else f"{ratio:.3f}",
                ok=None if ratio is None else ratio >= floor,
            )
        )
    for models, floor in ((small, 10.0), (many, 3.0)):
        ratio = inmem.get(models, {}).get("ratio")
        out.append(
            _floor(
                f"inmemory_{models}",
                f"`Pipeline.process` in memory, {models:,} models: × naive",
                floor=f"≥ {floor:g}×",
                value=ratio,
                shown="—" if ratio is None else f"{ratio:.2f}×",
                ok=None if ratio is None else ratio >= floor,
            )
        )
    memory = results.get("memory", {})
    steady = {s["models_requested"]: s for s in memory.get("steady", [])}
    for models in params["rss_models"]:
        s = steady.get(models, {})
        kib = s.get("kib_per_model")
        shown = "—"
        if kib is not None:
            shown = f"{kib:,.0f} KiB"
            if s.get("stopped") != "done":
                shown += f" (over the {s['models']:,} models fed; stopped: {s['stopped']})"
        out.append(
            _floor(
                f"rss_per_model_{models}",
                f"RSS per model in steady state, {models:,} models",
                floor=f"≤ {KIB_FLOOR} KiB",
                value=kib,
                shown=shown,
                ok=None if kib is None else kib <= KIB_FLOOR,
            )
        )
    fit = memory.get("fit")
    row = _floor(
        "fit_10000",
        f"{FIT_MODELS:,} models in steady state: peak RSS of the process",
        floor="≤ 4 GB",
        value=None if fit is None else fit["value_bytes"],
        shown="—" if fit is None else fit["shown"],
        ok=None if fit is None else fit["ok"],
    )
    if fit is not None and fit["ok"] is None:
        row["status"] = "INCOMPLETE"
    elif fit is None and memory and max(params["rss_models"]) != FIT_MODELS:
        row["shown"] = f"not measured (largest run: {max(params['rss_models']):,} models)"
    out.append(row)
    fill = memory.get("fill_check") or {}
    out.append(
        _floor(
            "fill_no_growth",
            "while the references fill: RSS per model fed 1 event per call, beyond large calls",
            floor=f"≤ {FILL_TOLERANCE:.0%} or {FILL_TOLERANCE_KIB:g} KiB (no growth per call)",
            value=fill.get("max_kib"),
            shown=fill.get("shown", "—"),
            ok=fill.get("ok"),
        )
    )
    alerts = results.get("latency", {}).get("alerts", {})
    p99 = alerts.get("p99_s")
    out.append(
        _floor(
            "latency_p99",
            "alert latency p99, event produced → alert received",
            floor=f"≤ {LATENCY_P99_S:g} s",
            value=p99,
            shown="—" if p99 is None else f"{p99:.3f} s ({alerts['count']} alerts)",
            ok=None if p99 is None else p99 <= LATENCY_P99_S,
        )
    )
    if alerts and p99 is None:
        out[-1]["status"] = "FAIL"
        out[-1]["shown"] = "no alert received"
    errors = results.get("errors", {})
    for row in out:
        part = row["key"].split("_")[0]
        part = {"rss": "memory", "fit": "memory", "fill": "memory"}.get(part, part)
        if row["status"] == "SKIP" and any(e.split()[0] == part for e in errors):
            row["status"] = "ERROR"
    return out


# -- markdown ------------------------------------------------------------------------------------


def _n(x: Any, digits: int = 0) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and np.isnan(x):
        return "n/a"
    return f"{x:,.{digits}f}"


def _rate_row(label: str, r: dict[str, Any], raw: float | None, bold: bool = False) -> str:
    ratio = "—" if not raw else f"{r['per_second'] / raw:.3f}"
    rate = _n(r["per_second"])
    if bold:
        rate, ratio = f"**{rate}**", f"**{ratio}**"
    return (
        f"| {label} | {_n(r['messages'])} | {r['seconds']:.2f} | {rate} | "
        f"{r['us_per_message']:.1f} | {ratio} |"
    )


def render(results: dict[str, Any]) -> str:
    p = results["params"]
    m = results["machine"]
    load = results["load_average"]
    lines = [
        "# Benchmarks (`make bench`)",
        "",
        f"Run {results['date_utc']} by `bench/throughput.py` (run id `{results['run_id']}`), "
        f"parts: {', '.join(results['parts'])}, {results['wall_s']:.0f} s in all"
        + (
            " — **quick mode: a smoke test, too small to judge the floors by**"
            if p["quick"]
            else ""
        )
        + ".",
        "",
        "The machine is shared with other work, so absolute rates move from run to run; the "
        "ratios compare measurements of the same run. Load average (1, 5, 15 min) "
        + "; ".join(
            f"{'at the ' + k if k in ('start', 'end') else 'before ' + k}: {_load(v)}"
            for k, v in load.items()
        )
        + ".",
        "",
        "| machine | |",
        "|---|---|",
        f"| cores | {m['cores']} ({m['cores_usable']} usable by the bench) |",
        f"| cpu | {m['cpu']} |",
        f"| memory | {m['memory_gib']} GiB |",
        f"| python | {m['python']} |",
        f"| confluent-kafka / librdkafka | {m['confluent_kafka']} / {m['librdkafka']} |",
        f"| numpy / orjson | {m['numpy']} / {m['orjson']} |",
        f"| broker | {m['broker']} |",
        "",
        "## Floors",
        "",
        "| floor | measured | required | |",
        "|---|---|---|---|",
        *(
            f"| {f['label']} | {f['shown']} | {f['floor']} | **{f['status']}** |"
            for f in results["floors"]
        ),
        "",
        f"**{sum(f['status'] == 'PASS' for f in results['floors'])} of "
        f"{len(results['floors'])} met.**",
        "",
    ]
    for part, error in results.get("errors", {}).items():
        lines += [f"**{part} failed:** `{error}`".replace("\n", " "), ""]
    lines += _config(results)
    if "broker" in results:
        lines += _broker(results)
    if "inmemory" in results:
        lines += _inmemory(results)
    if "latency" in results:
        lines += _latency(results)
    if "memory" in results:
        lines += _memory(results)
    lines += [
        "## Detection quality",
        "",
        "`make quality` measures detection delay and false alarms of the same defaults; see "
        "[`QUALITY.md`](QUALITY.md).",
        "",
        "## Running it",
        "",
        "`make bench` runs `bench/throughput.py --output bench/THROUGHPUT.md --json "
        "bench/results.json` with the broker up. Parts alone: `--only broker,inmemory,latency,"
        "memory` (any of them); `--quick` is a smoke test of the same code paths on small "
        "inputs; `--strict` exits 1 when a floor is not met. `--help` lists the sizes. This run: "
        f"`{' '.join(results['argv']) or '(no arguments)'}`.",
        "",
    ]
    return "\n".join(lines)


def _dead(x: dict[str, Any]) -> str:
    reasons = x.get("dead_letter_reasons") or {}
    if not reasons:
        return "0"
    by = ", ".join(f"{n:,} `{reason}`" for reason, n in sorted(reasons.items()))
    return f"{x['dead_letters']:,} ({by})"


def _load(values: list[float] | None) -> str:
    return "unknown" if values is None else ", ".join(f"{x:.2f}" for x in values)


def _config(results: dict[str, Any]) -> list[str]:
    c = results.get("config")
    if not c:
        return []
    processing = ", ".join(f"`{k}` {v}" for k, v in c["processing"].items())
    extra = ""
    if c.get("overrides"):
        extra = (
            " Overrides from the environment or the bench: "
            + ", ".join(f"`{k}={v}`" for k, v in c["overrides"].items())
            + "."
        )
    return [
        "Service settings in every part: the defaults of `load_config` (no config file), "
        f"processing: {processing}.{extra}",
        "",
    ]


def _broker(results: dict[str, Any]) -> list[str]:
    b = results["broker"]
    lines = [
        "## 1. Throughput through the broker",
        "",
        "Each scale: its input produced to fresh topics (2 partitions per input topic, a model's "
        "events on one partition of both), then read by the raw loop and by the service, each "
        "with a fresh consumer group (a backlog: the highest rate each sustains). *Raw*: "
        "`Consumer.consume(2000)` + `orjson.loads` of each value, first batch → last message "
        "decoded. *Service*: `DriftlineApp` in this process, first batch → shutdown done (every "
        "record handed to `Pipeline.process` and accounted for, i.e. observed by its model's "
        "monitor or dead-lettered, outputs flushed, offsets committed).",
        "",
    ]
    for s in b["scales"]:
        raw, svc = s["raw"], s["service"]
        x = svc
        lines += [
            f"### {s['models']:,} models × 20 features, {s['events_per_model']:,} predictions + "
            f"{s['events_per_model']:,} outcomes per model",
            "",
            f"N = {s['messages']:,} messages ({s['bytes_per_message']:.0f} bytes on average), "
            f"produced (lz4) in {s['produce_s']:.1f} s before measuring. {s['changes']}",
            "",
            "| measurement | messages | seconds | messages/s | µs/message | ratio to raw |",
            "|---|---|---|---|---|---|",
            _rate_row("raw: `consume(2000)` + `orjson.loads`", raw, raw["per_second"]),
            _rate_row(
                "**service: `DriftlineApp`, first batch → shutdown done**",
                svc,
                raw["per_second"],
                bold=True,
            ),
            f"| service from `run()` (start-up and group join {x['startup_s']:.1f} s included) | "
            f"{_n(x['messages'])} | {x['from_start_s']:.2f} | "
            f"{_n(x['messages'] / x['from_start_s'])} | "
            f"{1e6 * x['from_start_s'] / x['messages']:.1f} | {s['ratio_from_start']:.3f} |",
            "",
            f"- Inside the service: `Pipeline.process` (with `flush_due` and `flush`) "
            f"{x['process_s']:.2f} s ({100 * x['process_s'] / svc['seconds']:.0f}% of the "
            f"measured time, {1e6 * x['process_s'] / x['messages']:.1f} µs/message, "
            f"{x['process_calls']:,} batches); the rest (consume, `InputRecord`s, publish, "
            f"commits, waiting) {svc['seconds'] - x['process_s']:.2f} s. The last record was "
            f"accounted for {x['to_last_batch_s']:.2f} s after the first batch; shutdown "
            f"{x['shutdown_s']:.2f} s.",
            f"- Records observed by a monitor: {_n(x['observed'])} of {_n(x['messages'])}, "
            f"dead-lettered: {_dead(x)}; predictions that expired unlabelled: "
            f"{_n(x['expired_predictions'])}; join entries waiting at most "
            f"{_n(x['join_waiting_max'])}. Committed offsets afterwards: {_n(s['committed'])} of "
            f"{_n(s['messages'])}. Alerts {x['alerts']}, incident events {x['incidents']}; full "
            f"garbage collections {x['gc_gen2']}. The raw loop waited "
            f"{raw['startup_s']:.1f} s for its first batch.",
            "",
        ]
    return lines


def _inmemory(results: dict[str, Any]) -> list[str]:
    lines = [
        "## 2. In memory: `Pipeline.process` against a naive per-event implementation",
        "",
        "The same messages as the broker runs use (same generator, same order). "
        "`Pipeline.process` gets `InputRecord`s (built before timing) in batches of "
        "`processing.batch_size`; the naive implementation, [`bench/naive.py`](naive.py), gets "
        "them one by one and does the same job as driftline's default settings in plain Python "
        "(loops per event and per feature, dicts, `deque`s, running counts): per event "
        "`orjson.loads` and a dict join; data drift per model and feature and prediction drift "
        "on `score`, each a fixed reference (first 5,000) and a rolling window (last 1,000) with "
        "a Kolmogorov-Smirnov (`scipy.stats.ks_2samp`, asymptotic) or chi-square "
        "(`scipy.stats.chi2_contingency`) test every 250 predictions, alpha 1e-5 Bonferroni, 2 "
        "consecutive evaluations to alert; data quality per feature and event (null, type "
        "mismatch, out of the reference's range, unseen category) as rates over the last 500 "
        "events checked every 100 against the reference's rates plus the default levels; "
        "river's ADWIN (delta 1e-4) on the 0/1 error of every labelled event; accuracy, "
        "precision, recall, F1 and label coverage over the last 1,000 labels, with the accuracy "
        "checked every 50 labels against the first 2,000. It compares point estimates and fires "
        "each alert once: it does not validate or dead-letter, expire the join, put confidence "
        "bounds on KPIs and rates, resolve alerts, open incidents, handle model versions or "
        "compute AUC, log loss, Brier, label delay, PSI, JS or Wasserstein (driftline does). "
        '"naive in tests" is the share of its time spent in the KS and chi-square tests.',
        "",
        "| models | messages | `Pipeline.process` msgs/s | µs/msg | naive msgs/s | µs/msg | "
        "naive in tests | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for s in results["inmemory"]["scales"]:
        pl, nv = s["pipeline"], s["naive"]
        share = 100 * nv["test_seconds"] / nv["seconds"] if nv["seconds"] else 0.0
        lines.append(
            f"| {s['models']:,} | {_n(s['messages'])} | {_n(pl['per_second'])} | "
            f"{pl['us_per_message']:.1f} | {_n(nv['per_second'])} | {nv['us_per_message']:.1f} | "
            f"{share:.0f}% | **{s['ratio']:.2f}×** |"
        )
        notes.append(
            f"- {s['models']:,} models: records observed by the pipeline's monitors "
            f"{_n(pl['observed'])} of {_n(s['messages'])}, dead-lettered: {_dead(pl)}; alerts: "
            f"pipeline {pl['alerts']} (+{pl['incidents']} incident events), naive "
            f"{nv['alerts']}; full garbage collections during the pipeline run {pl['gc_gen2']}."
        )
    return [*lines, "", *notes, ""]


def _latency(results: dict[str, Any]) -> list[str]:
    x = results["latency"]
    a = x["alerts"]

    def ms(v: float | None) -> str:
        return "—" if v is None else f"{1000 * v:,.0f}"

    capacity = x.get("capacity_note", "")
    lines = [
        "## 3. Alert latency, live",
        "",
        f"`driftline run` as its own process, defaults; {x['models']} models × 20 features, "
        f"{x['events_per_model']:,} predictions and as many outcomes each ({_n(x['messages'])} "
        f"messages), "
        f"produced at a steady {_n(x['rate_target'])} messages/s (achieved "
        f"{_n(x['rate_achieved'])}; the producer was at most {x['producer_late_max_ms']:.0f} ms "
        f"behind its schedule, p99 {x['producer_late_p99_ms']:.1f} ms) while the service ran. "
        f"{x['degrading_models']} of the models lose accuracy (0.90 → 0.81) and shift a feature "
        f"(0.5 sd) from event {', '.join(f'{c:,}' for c in x['change_at'])}. {capacity}"
        "Latency of an alert: the wall time its message was received by a consumer of the "
        "alerts topic minus the wall time the event its `source` names (the triggering "
        "prediction or outcome) was handed to `produce()`. It includes the producer's linger "
        "(5 ms), the service's poll, any micro-batching wait "
        "(`processing.max_buffer_ms`), processing, its producer's linger (20 ms) and the "
        "alert consumer's fetch.",
        "",
        "| | count | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
        f"| **alerts** | {a['count']} | {ms(a['p50_s'])} | **{ms(a['p99_s'])}** | "
        f"{ms(a['max_s'])} |",
        *(
            f"| {kind} | {s['count']} | {ms(s['p50_s'])} | {ms(s['p99_s'])} | {ms(s['max_s'])} |"
            for kind, s in x["by_kind"].items()
        ),
        f"| incident events | {x['incidents']['count']} | {ms(x['incidents']['p50_s'])} | "
        f"{ms(x['incidents']['p99_s'])} | {ms(x['incidents']['max_s'])} |",
        "",
        f"- p99 is interpolated between the two highest of {a['count']} values (numpy's "
        "default), so with few alerts it is close to the maximum. Alert messages whose source "
        f"was not produced by the bench: {x['unmatched']}. The service was assigned its "
        f"partitions {x['service_ready_s']:.1f} s after it started; it had committed "
        f"{_n(x['committed'])} of {_n(x['messages'])} offsets {x['drain_s']:.1f} s after the "
        f"last message was produced; exit status {x['service_exit']}.",
        "",
    ]
    return lines


def _memory(results: dict[str, Any]) -> list[str]:
    x = results["memory"]
    lines = [
        "## 4. Memory per model",
        "",
        "`ModelMonitor`s fed directly (decoding 10,000 models' events would take too long), "
        "each measurement in a fresh process ([`bench/memory.py`](memory.py)): one 20-feature "
        "stream, all predictions labelled, built once and fed to every monitor in calls of "
        f"{x['params']['batch']:,} events; {x['params']['events']:,} predictions per model "
        "reach the steady state (references: data and prediction drift 5,000, KPIs 2,000). "
        "RSS = `VmRSS` after `gc.collect()`; per model = (after − before) / models; KiB. The "
        "baseline is read after a throwaway monitor was fed everything (lazy imports, caches) "
        "and its memory trimmed.",
        "",
        "| models | fed | RSS before MiB | RSS after MiB | **KiB per model** | peak RSS MiB | "
        f"growth over {x['params']['extra']:,} more events, KiB per model | feeding s "
        "| ms per model |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in x["steady"]:
        if "error" in s:
            error = str(s["error"]).replace("|", "/")
            lines.append(f"| {s['models_requested']:,} | error: {error} | | | | | | | |")
            continue
        growth = s.get("growth_kib_per_model")
        lines.append(
            f"| {s['models_requested']:,} | {s['models']:,}"
            + ("" if s["stopped"] == "done" else f" (stopped: {s['stopped']})")
            + f" | {s['rss_before_kib'] / 1024:,.0f} | {s['rss_after_kib'] / 1024:,.0f} | "
            f"**{s['kib_per_model']:,.1f}** | {s['hwm_kib'] / 1024:,.0f} | "
            f"{'—' if growth is None else f'{growth:,.1f}'} | {s['seconds']:,.0f} | "
            f"{1000 * s['seconds'] / max(s['models'], 1):,.0f} |"
        )
    fit = x.get("fit")
    if fit is not None:
        lines += ["", f"- **{FIT_MODELS:,} models in 4 GB: {fit['verdict']}**"]
    fills = x.get("fill", {})
    if fills:
        lines += [
            "",
            "While the references fill: the same number of fresh models fed round-robin (as a "
            "live stream feeds them), one event per call (a model at low traffic) in one "
            "process and in calls of many events in another; both processes build both sets of "
            "calls and warm up with both, so they start from alike heaps. RSS per model at each "
            "point, KiB:",
            "",
        ]
        keys = [k for k in ("one_row", "batch") if k in fills and "error" not in fills[k]]
        for k, f in fills.items():
            if "error" in f:
                lines.append(f"- {k}: error: {f['error']}")
        if keys:
            events = sorted({pt["events"] for k in keys for pt in fills[k]["points"]})
            header = " | ".join(
                f"{fills[k]['rows_per_call']:,} event{'s' if fills[k]['rows_per_call'] > 1 else ''}"
                f" per call ({fills[k]['models']} models)"
                for k in keys
            )
            lines += [
                f"| predictions (and outcomes) per model | {header} |",
                "|---|" + "---|" * len(keys),
            ]
            for e in events:
                cells = []
                for k in keys:
                    pt = next((q for q in fills[k]["points"] if q["events"] == e), None)
                    cells.append("—" if pt is None else f"{pt['kib_per_model']:,.1f}")
                lines.append(f"| {e:,} | " + " | ".join(cells) + " |")
            for k in keys:
                if fills[k]["stopped"] != "done":
                    lines.append(
                        f"\n- {fills[k]['rows_per_call']:,} per call: stopped early "
                        f"({fills[k]['stopped']}) after {fills[k]['seconds']:.0f} s."
                    )
    check = x.get("fill_check")
    if check is not None:
        lines += ["", f"- {check['verdict']}"]
    first = next((s for s in x["steady"] if "kib_per_model" in s), None)
    if fills and first is not None:
        lines.append(
            f"- For comparison, the steady state: {first['kib_per_model']:,.1f} KiB per model "
            f"({first['models']:,} models)."
        )
    return [*lines, ""]
