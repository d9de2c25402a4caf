"""Memory per model: RSS of ``ModelMonitor`` s fed directly, each measurement in a fresh process.

Decoding the events of 10,000 models past their references (more than 5,000 predictions each)
would take far too long, so a child process (``bench/memory.py --child ...``) builds one model's
stream once (``bench/quality.py``'s 20-feature model, all predictions labelled) and feeds the same
event objects, pre-cut into the calls, to every ``ModelMonitor`` (settings from ``load_config``:
the service's defaults). A throwaway monitor is fed everything first, so whatever the shared input
caches (and every lazy import) is in the baseline; the memory it freed is handed back to the
system (``malloc_trim``) before the baseline is read, so the models are not measured into heap
the warm-up left free. RSS is ``VmRSS`` of ``/proc/self/status`` after ``gc.collect()`` (and
nothing trimmed after the baseline: what the models leave behind counts); the peak is ``VmHWM``.
KB here is KiB (what ``/proc`` reports).

* ``steady``: ``models`` monitors, one after the other, each fed ``events`` predictions and their
  outcomes in calls of ``batch`` rows; RSS per model = (RSS after - RSS before) / models. Then,
  when ``extra`` is set, every monitor is fed ``extra`` more events and the growth per model is
  reported: about 0 in a steady state. The child stops early when its RSS passes ``cap`` bytes
  (the answer to "does it fit" is then known: no) or when ``budget`` seconds have passed.
* ``fill``: ``models`` monitors fed round-robin, ``rows`` events per call (1: one event per call,
  the worst case for a live stream), RSS per model at each checkpoint while the references fill.
  Whatever ``rows``, the child builds the calls of 1 and of ``batch`` events and warms up with
  both, so that runs with different ``rows`` start from alike heaps.

The input form is probed: ``PredictionBatch`` / ``LabeledBatch`` / ``ExpiredBatch`` of
``detectors.batch`` when ``ModelMonitor.observe`` takes them, else lists of the events of
``detectors.events``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from driftline.detectors.events import Labeled, Prediction

ROOT = Path(__file__).resolve().parents[1]
# One event per call may cost this much more RSS per model than large calls (the two runs start
# from alike heaps and hash the same, so what differs beyond this is the feeding).
FILL_TOLERANCE_KIB, FILL_TOLERANCE = 16.0, 0.05
Args = tuple[Any, ...]


def status(field: str) -> int:
    """A ``/proc/self/status`` field in KiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_kib() -> int:
    gc.collect()
    return status("VmRSS")


def baseline_kib() -> int:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return status("VmRSS")


def _events(n: int) -> tuple[list[Prediction], list[Labeled]]:
    from bench import quality as q
    from driftline.service.synthetic import as_events

    values, outcomes = q.generate_chunk(q.StreamSpec(model_id="mem", seed=7), 0, n)
    return as_events(
        (orjson.loads(pv), orjson.loads(ov)) for pv, ov in zip(values, outcomes, strict=True)
    )


Form = Callable[[Sequence[Prediction], Sequence[Labeled]], Args]


def _forms() -> list[tuple[str, Form]]:
    forms: list[tuple[str, Form]] = []
    try:
        from driftline.detectors.batch import ExpiredBatch, LabeledBatch, PredictionBatch

        def columnar(p: Sequence[Prediction], lab: Sequence[Labeled]) -> Args:
            return (
                PredictionBatch.from_events(p),
                LabeledBatch.from_events(lab),
                ExpiredBatch.from_events([]),
            )

        forms.append(("detectors.batch", columnar))
    except ImportError:
        pass
    forms.append(("event lists", lambda p, lab: (list(p), list(lab), [])))
    return forms


def _probe(make: Callable[[str], Any], p: list[Prediction], lab: list[Labeled]) -> tuple[str, Form]:
    """The input form ``ModelMonitor.observe`` takes now."""
    errors = []
    for name, form in _forms():
        try:
            make("probe").observe(*form(p[:3], lab[:3]))
            return name, form
        except (TypeError, AttributeError) as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    raise RuntimeError("ModelMonitor.observe takes no known input form: " + "; ".join(errors))


def _monitor_factory() -> Callable[[str], Any]:
    from driftline.detectors.monitor import ModelMonitor
    from driftline.service.config import load_config

    config = load_config(None, environ={})
    return lambda model_id: ModelMonitor(model_id, config.monitor_settings(model_id))


def _cuts(n: int, rows: int, checkpoints: Sequence[int] = ()) -> list[tuple[int, int]]:
    """(start, stop) of the calls that feed events 0..n-1, ``rows`` at a time, cut at the
    checkpoints too."""
    if n <= 0:
        return []
    bounds = sorted({*range(0, n, rows), *checkpoints, n} - {0})
    return list(zip([0, *bounds[:-1]], bounds, strict=True))


def child_steady(args: argparse.Namespace) -> dict[str, Any]:
    make = _monitor_factory()
    predictions, labeled = _events(args.events + args.extra)
    form_name, form = _probe(make, predictions, labeled)
    cuts_a = _cuts(args.events, args.batch)
    cuts_b = [(args.events + a, args.events + b) for a, b in _cuts(args.extra, args.batch)]
    phase_a = [form(predictions[a:b], labeled[a:b]) for a, b in cuts_a]
    phase_b = [form(predictions[a:b], labeled[a:b]) for a, b in cuts_b] if args.extra else []
    warm = make("warm-up")
    for call in phase_a + phase_b:
        warm.observe(*call)
    del warm
    before = baseline_kib()
    cap_kib = args.cap / 1024
    monitors, alerts, reason = [], 0, "done"
    started = time.perf_counter()
    for k in range(args.models):
        monitor = make(f"m{k}")
        for call in phase_a:
            alerts += len(monitor.observe(*call))
        monitors.append(monitor)
        if status("VmRSS") > cap_kib:
            reason = "cap"
            break
        if time.perf_counter() - started > args.budget:
            reason = "time"
            break
    seconds = time.perf_counter() - started
    after = rss_kib()
    out: dict[str, Any] = {
        "form": form_name,
        "models_requested": args.models,
        "models": len(monitors),
        "stopped": reason,
        "events": args.events,
        "batch": args.batch,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "hwm_kib": status("VmHWM"),
        "seconds": round(seconds, 2),
        "alerts": alerts,
    }
    if phase_b and reason == "done":
        started = time.perf_counter()
        for monitor in monitors:
            for call in phase_b:
                monitor.observe(*call)
        out["extra_events"] = args.extra
        out["rss_after_extra_kib"] = rss_kib()
        out["extra_seconds"] = round(time.perf_counter() - started, 2)
        out["hwm_kib"] = status("VmHWM")
    return out


def child_fill(args: argparse.Namespace) -> dict[str, Any]:
    make = _monitor_factory()
    checkpoints = sorted(args.checkpoints)
    last = checkpoints[-1]
    predictions, labeled = _events(last)
    form_name, form = _probe(make, predictions, labeled)
    # Both runs (1 event per call, many per call) build both sets of calls and warm up with both,
    # so their heaps are alike when the baseline is read: only the feeding differs.
    sets = {
        rows: [(b, form(predictions[a:b], labeled[a:b])) for a, b in _cuts(last, rows, checkpoints)]
        for rows in sorted({1, args.rows, args.batch})
    }
    for warm_calls in sets.values():
        warm = make("warm-up")
        for _, call in warm_calls:
            warm.observe(*call)
        del warm
    calls = sets[args.rows]
    before = baseline_kib()
    monitors = [make(f"m{k}") for k in range(args.models)]
    points = [{"events": 0, "rss_kib": rss_kib()}]
    started = time.perf_counter()
    reason = "done"
    for end, call in calls:
        for monitor in monitors:
            monitor.observe(*call)
        if end in checkpoints:
            points.append({"events": end, "rss_kib": rss_kib()})
        over_cap = status("VmRSS") > args.cap / 1024
        if (over_cap or time.perf_counter() - started > args.budget) and end != last:
            reason = "cap" if over_cap else "time"
            if end not in checkpoints:
                points.append({"events": end, "rss_kib": rss_kib()})
            break
    return {
        "form": form_name,
        "models": args.models,
        "rows_per_call": args.rows,
        "rss_before_kib": before,
        "points": points,
        "stopped": reason,
        "seconds": round(time.perf_counter() - started, 2),
        "hwm_kib": status("VmHWM"),
    }


# -- the parent side ---------------------------------------------------------------------------


def measure(argv: list[str], timeout_s: float) -> dict[str, Any]:
    """One measurement in a fresh process; its JSON answer, or an ``error``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONHASHSEED"] = "0"  # the same allocations from run to run
    cmd = [sys.executable, str(ROOT / "bench" / "memory.py"), "--child", *argv]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {timeout_s:.0f} s", "argv": argv}
    wall = round(time.perf_counter() - started, 1)
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        errors = done.stderr.decode(errors="replace").strip().splitlines() or ["(no output)"]
        return {"error": f"exit {done.returncode}: {errors[-1]}", "argv": argv}
    answer: dict[str, Any] = json.loads(lines[-1])
    answer["wall_s"] = wall
    return answer


def _argv(kind: str, **options: Any) -> list[str]:
    out = [kind]
    for name, value in options.items():
        values = value if isinstance(value, list | tuple) else [value]
        out += [f"--{name}", *map(str, values)]
    return out


def run(
    *,
    models: Sequence[int],
    events: int,
    extra: int,
    batch: int,
    fill_models: int,
    checkpoints: Sequence[int],
    budgets_s: Sequence[float],
    fill_budget_s: float,
    jobs: int,
    fit_models: int,
    fit_bytes: float,
) -> dict[str, Any]:
    """All RSS measurements (``jobs`` children at a time: they measure memory, not time) and
    what follows from them."""
    steady_argv = [
        _argv(
            "steady",
            models=n,
            events=events,
            batch=batch,
            extra=extra if i == 0 else 0,
            budget=budget,
            cap=fit_bytes,
        )
        for i, (n, budget) in enumerate(zip(models, budgets_s, strict=True))
    ]
    fill_argv = {
        key: _argv(
            "fill",
            models=fill_models,
            rows=rows,
            batch=batch,
            budget=fill_budget_s,
            cap=fit_bytes,
            checkpoints=checkpoints,
        )
        for key, rows in (("one_row", 1), ("batch", batch))
    }
    timeout = 3 * max(*budgets_s, fill_budget_s) + 600
    jobs_in_order = [*steady_argv, *fill_argv.values()]
    # The most models (argv[2]) first: it takes longest.
    order = sorted(range(len(jobs_in_order)), key=lambda i: -int(jobs_in_order[i][2]))
    answers: dict[int, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {i: pool.submit(measure, jobs_in_order[i], timeout) for i in order}
        for i, future in futures.items():
            answers[i] = future.result()
    steady = []
    for i, n in enumerate(models):
        s = answers[i]
        s.setdefault("models_requested", n)
        if "error" not in s:
            fed = max(s["models"], 1)
            s["kib_per_model"] = round((s["rss_after_kib"] - s["rss_before_kib"]) / fed, 1)
            if "rss_after_extra_kib" in s:
                s["growth_kib_per_model"] = round(
                    (s["rss_after_extra_kib"] - s["rss_after_kib"]) / fed, 1
                )
        steady.append(s)
    fill: dict[str, dict[str, Any]] = {}
    for j, key in enumerate(fill_argv):
        f = answers[len(steady_argv) + j]
        if "error" not in f:
            for point in f["points"]:
                point["kib_per_model"] = round(
                    (point["rss_kib"] - f["rss_before_kib"]) / f["models"], 1
                )
        fill[key] = f
    out: dict[str, Any] = {
        "params": {
            "events": events,
            "extra": extra,
            "batch": batch,
            "budgets_s": list(budgets_s),
            "fill_budget_s": fill_budget_s,
            "jobs": jobs,
        },
        "steady": steady,
        "fill": fill,
    }
    largest = steady[-1] if steady else None
    if largest is not None and largest["models_requested"] == fit_models:
        out["fit"] = _fit(largest, fit_models, fit_bytes)
    out["fill_check"] = _fill_check(fill.get("one_row"), fill.get("batch"))
    return out


def _fit(s: dict[str, Any], models: int, limit: float) -> dict[str, Any]:
    if "error" in s:
        return {"ok": None, "value_bytes": None, "shown": "error", "verdict": s["error"]}
    peak = s["hwm_kib"] * 1024
    gb = f"{limit / 1e9:g} GB"
    if s["stopped"] == "done":
        fits = peak <= limit
        shown = f"{peak / 1e9:.2f} GB peak"
        verdict = (
            f"{'yes' if fits else 'no'}: {s['models']:,} models in steady state, peak RSS of the "
            f"process {peak / 1e9:.2f} GB ({peak / 2**30:.2f} GiB), limit {gb}."
        )
        return {"ok": fits, "value_bytes": peak, "shown": shown, "verdict": verdict}
    if s["stopped"] == "cap":
        shown = f"> {gb} after {s['models']:,} models"
        verdict = (
            f"no: the process passed {gb} of RSS with {s['models']:,} of {models:,} models fed "
            f"({s['kib_per_model']:,.0f} KiB per model)."
        )
        return {"ok": False, "value_bytes": peak, "shown": shown, "verdict": verdict}
    projected = (s["rss_before_kib"] + s["kib_per_model"] * models) * 1024
    shown = f"{projected / 1e9:.2f} GB projected from {s['models']:,} models"
    ok: bool | None = False if projected > 1.1 * limit else None
    verdict = (
        f"{'no' if ok is False else 'not measured'}: the time budget ran out after "
        f"{s['models']:,} of {models:,} models; at their {s['kib_per_model']:,.0f} KiB per model "
        f"{models:,} models would take about {projected / 1e9:.2f} GB (limit {gb})."
    )
    return {"ok": ok, "value_bytes": projected, "shown": shown, "verdict": verdict}


def _fill_check(one_row: dict[str, Any] | None, batch: dict[str, Any] | None) -> dict[str, Any]:
    """Per-call overhead while the references fill: RSS per model fed one event per call minus
    the same models fed the same events in large calls, at each checkpoint."""
    if not one_row or not batch or "error" in one_row or "error" in batch:
        return {"ok": None, "max_kib": None, "shown": "—", "verdict": "not measured"}
    large = {p["events"]: p["kib_per_model"] for p in batch["points"]}
    rows = [
        (p["kib_per_model"] - large[p["events"]], p["events"], p["kib_per_model"])
        for p in one_row["points"]
        if p["events"] > 0 and p["events"] in large
    ]
    if not rows:
        return {"ok": None, "max_kib": None, "shown": "—", "verdict": "no common checkpoint"}

    def allowed(events: int) -> float:
        return max(FILL_TOLERANCE_KIB, FILL_TOLERANCE * large[events])

    ok = all(excess <= allowed(events) for excess, events, _ in rows)
    worst, events, kib = max(rows)
    shown = (
        f"{worst:+,.0f} KiB at {events:,} event{'s' if events > 1 else ''} "
        f"({kib:,.0f} vs {large[events]:,.0f})"
    )
    verdict = (
        f"RSS per model fed one event per call minus fed the same events in calls of "
        f"{batch['rows_per_call']:,}, at the same point: {min(rows)[0]:+,.1f} to {worst:+,.1f} "
        f"KiB with {one_row['models']} models (allowed: {FILL_TOLERANCE:.0%} or "
        f"{FILL_TOLERANCE_KIB:g} KiB, for measurement noise): "
        + ("no growth per call." if ok else "**it grows per call**.")
    )
    return {"ok": ok, "max_kib": round(worst, 1), "shown": shown, "verdict": verdict}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one RSS measurement (a child of the bench)")
    parser.add_argument("--child", choices=["steady", "fill"], required=True)
    parser.add_argument("--models", type=int, required=True)
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--extra", type=int, default=0)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[1, 500, 2500, 4900])
    parser.add_argument("--budget", type=float, default=300.0, help="seconds")
    parser.add_argument("--cap", type=float, default=4e9, help="bytes of RSS")
    args = parser.parse_args(argv)
    out = child_steady(args) if args.child == "steady" else child_fill(args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
