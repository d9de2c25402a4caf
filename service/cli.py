"""The ``driftline`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
import yaml

from driftline.service.config import Config, load_config
from driftline.service.errors import DriftlineError

if TYPE_CHECKING:
    from driftline.detectors.estimated import IsotonicCalibrator

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except DriftlineError as exc:
        print(f"driftline: {exc}", file=sys.stderr)
        return EXIT_CONFIG if exc.__class__.__name__ == "ConfigError" else EXIT_RUNTIME
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline", description="Streaming drift detection for ML models on Kafka."
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="consume predictions and outcomes, publish alerts")
    run.add_argument("--config", help="YAML config file (DRIFTLINE_* variables override it)")
    run.set_defaults(handler=_run)

    rep = sub.add_parser("replay", help="run the same pipeline over a JSON-lines file")
    rep.add_argument("--input", required=True, help="records {topic, key, value}, one per line")
    rep.add_argument("--config")
    rep.add_argument("--output", help="alerts as JSON lines (default: stdout)")
    rep.add_argument("--dead-letters", help="write dead letters as JSON lines to this file")
    rep.add_argument(
        "--summary",
        action="store_true",
        help="after the replay, print a per-model summary of incidents and alerts "
        "(to stdout; to stderr when the alerts go to stdout)",
    )
    rep.add_argument(
        "--change-at",
        type=_event_time,
        metavar="TIME",
        help="event time (RFC 3339 or epoch ms) at which the models are known to have changed; "
        "the summary then reports the time to detect",
    )
    rep.add_argument("--summary-json", metavar="FILE", help="write the summary as JSON to FILE")
    rep.set_defaults(handler=_replay)

    report = sub.add_parser(
        "report", help="replay a file and write an HTML report of what would have fired, and when"
    )
    report.add_argument("--input", required=True, help="records {topic, key, value}, one per line")
    report.add_argument("--config")
    report.add_argument("--output", required=True, help="the HTML file to write")
    report.add_argument(
        "--change-at",
        type=_event_time,
        metavar="TIME",
        help="event time at which the models are known to have changed: the first table then "
        "gives the time to detect from it",
    )
    report.add_argument(
        "--plots",
        type=_at_least_one,
        default=50,
        metavar="N",
        help="draw the figures of at most N models, those with the most incidents, degradation "
        "periods and alerts (default 50; every model is in the tables)",
    )
    report.set_defaults(handler=_report)

    prof = sub.add_parser("profile", help="make a baseline profile from training data")
    prof.add_argument(
        "--input",
        required=True,
        help="JSON lines: prediction events, or objects with a 'features' object; rows that "
        "also carry a 'label' (and a numeric 'score') calibrate the scores",
    )
    prof.add_argument("--output", required=True)
    prof.add_argument(
        "--positive-label",
        default="1",
        type=_json_label,
        metavar="LABEL",
        help='the class a numeric score is the probability of, as JSON (default 1; "yes" for '
        "a string)",
    )
    prof.set_defaults(handler=_profile)

    alerts = sub.add_parser(
        "alerts", help="read the alerts topic: a line per event on a terminal, else JSON lines"
    )
    alerts.add_argument("--config")
    alerts.add_argument("--model", action="append", help="only these model_ids (repeatable)")
    alerts.add_argument(
        "--kind",
        action="append",
        help="only these kinds (repeatable): concept_drift, data_drift, ..., incident",
    )
    alerts.add_argument(
        "--follow", action="store_true", help="keep reading new events until interrupted"
    )
    alerts.set_defaults(handler=_alerts)

    check = sub.add_parser("check-config", help="validate a config, print the effective config")
    check.add_argument("config", nargs="?")
    check.add_argument(
        "--model",
        action="append",
        default=[],
        help="also print the effective settings of this model_id",
    )
    check.set_defaults(handler=_check_config)

    topics = sub.add_parser("create-topics", help="create the topics that do not exist yet")
    topics.add_argument("--config")
    topics.add_argument("--partitions", type=int, default=4)
    topics.set_defaults(handler=_create_topics)
    return parser


def _load(path: str | None) -> Config:
    return load_config(path)


def _run(args: argparse.Namespace) -> int:
    from driftline.service.app import DriftlineApp
    from driftline.service.logs import configure_logging

    config = _load(args.config)
    configure_logging(config.logging.format, config.logging.level)
    return DriftlineApp(config, args.config).run()


def _alerts(args: argparse.Namespace) -> int:
    import signal

    from driftline.service.tail import read_alerts, write

    config = load_config(args.config)
    interrupted = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    events = read_alerts(
        config,
        models=args.model,
        kinds=args.kind,
        follow=args.follow,
        stopped=lambda: interrupted,
    )
    write(events, sys.stdout.buffer, readable=sys.stdout.isatty())
    return 0


def _replay(args: argparse.Namespace) -> int:
    from driftline.service.config import load_profile
    from driftline.service.replay import replay

    config = _load(args.config)
    with ExitStack() as stack:
        source = stack.enter_context(Path(args.input).open("rb"))
        sink: IO[bytes] = (
            stack.enter_context(Path(args.output).open("wb")) if args.output else sys.stdout.buffer
        )
        letters = (
            stack.enter_context(Path(args.dead_letters).open("wb")) if args.dead_letters else None
        )
        emitted: list[dict[str, Any]] | None = [] if args.summary or args.summary_json else None
        records, alerts, dead = replay(config, source, sink, load_profile, letters, emitted=emitted)
    print(
        f"replayed {records} records: {alerts} alerts and incident events, {dead} dead letters",
        file=sys.stderr,
    )
    if emitted is not None:
        _replay_summary(args, emitted)
    return 0


def _report(args: argparse.Namespace) -> int:
    try:
        import matplotlib  # noqa: F401  (only to say clearly what is missing)
    except ImportError:
        print(
            "driftline: `driftline report` needs matplotlib: pip install 'driftline[report]'",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    from driftline.service.config import load_profile
    from driftline.service.report import build_report, render_report

    config = _load(args.config)
    report = build_report(config, Path(args.input), load_profile, change_at_ms=args.change_at)
    Path(args.output).write_text(render_report(report, args.plots), encoding="utf-8")
    print(
        f"report of {report.records} records and {len(report.models)} models written to "
        f"{args.output}",
        file=sys.stderr,
    )
    return 0


def _replay_summary(args: argparse.Namespace, emitted: list[dict[str, Any]]) -> None:
    from driftline.service.summary import render_text, summarize, with_inputs

    summary = summarize(emitted, change_at_ms=args.change_at)
    with Path(args.input).open("rb") as source:
        summary = with_inputs(summary, source)
    if args.summary_json:
        Path(args.summary_json).write_bytes(
            orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
            + b"\n"
        )
    if args.summary:
        # stdout carries the alerts when there is no --output; keep it parseable.
        out = sys.stdout if args.output else sys.stderr
        out.write(render_text(summary))
        out.flush()


def _at_least_one(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return number


def _event_time(value: str) -> int:
    from driftline.service.summary import parse_time_ms

    try:
        return parse_time_ms(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _profile(args: argparse.Namespace) -> int:
    from driftline.detectors.columns import columnarize, infer_kinds
    from driftline.detectors.reference import ModelProfile

    rows: list[dict[str, object]] = []
    outputs: list[dict[str, object]] = []
    labels: list[object] = []
    with Path(args.input).open("rb") as source:
        for number, line in enumerate(source):
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                print(f"driftline: {args.input}:{number + 1}: not JSON: {exc}", file=sys.stderr)
                return EXIT_RUNTIME
            features = doc.get("features") if isinstance(doc, dict) else None
            if not isinstance(features, dict):
                print(
                    f"driftline: {args.input}:{number + 1}: no 'features' object", file=sys.stderr
                )
                return EXIT_RUNTIME
            rows.append(features)
            score = doc.get("score")
            outputs.append(
                {
                    "score": score if isinstance(score, float | int) else None,
                    "prediction": doc.get("prediction"),
                }
            )
            labels.append(doc.get("label"))
    if not rows:
        print(f"driftline: {args.input} has no rows", file=sys.stderr)
        return EXIT_RUNTIME
    kinds = infer_kinds(rows)
    output_kinds = infer_kinds(outputs)
    if "score" in output_kinds:
        output_kinds["score"] = "numeric"
    calibration = _calibration(outputs, labels, args.positive_label)
    profile = ModelProfile.from_columns(
        columnarize(rows, kinds),
        kinds,
        outputs=columnarize(outputs, output_kinds),
        calibration=calibration,
    )
    Path(args.output).write_bytes(
        orjson.dumps(profile.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    )
    calibrated = "" if calibration is None else f", scores calibrated on {calibration.n} labels"
    print(
        f"profiled {len(rows)} rows, {len(kinds)} features{calibrated} -> {args.output}",
        file=sys.stderr,
    )
    return 0


def _json_label(text: str) -> str | int | bool:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, str | int | bool):
        return value
    raise argparse.ArgumentTypeError(f"{text!r} is not a JSON string, integer or boolean")


def _calibration(
    outputs: list[dict[str, object]], labels: list[object], positive: str | int | bool
) -> IsotonicCalibrator | None:
    """The scores' calibration from the rows with a numeric score and a label (None without
    any)."""
    import numpy as np

    from driftline.detectors.estimated import IsotonicCalibrator
    from driftline.detectors.labels import is_positive

    pairs = [
        (float(o["score"]), label)  # type: ignore[arg-type]
        for o, label in zip(outputs, labels, strict=True)
        if o["score"] is not None and label is not None
    ]
    if not pairs:
        return None
    scores, kept = zip(*pairs, strict=True)
    return IsotonicCalibrator.fit(np.array(scores), is_positive(list(kept), positive), positive)


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    effective = config.redacted()
    models = {
        model_id: config.monitor_settings(model_id).model_dump(mode="json")
        for model_id in [*config.models, *args.model]
    }
    effective["effective_models"] = models
    effective["effective_defaults"] = config.monitor_settings("__defaults__").model_dump(
        mode="json"
    )
    sys.stdout.write(yaml.safe_dump(effective, sort_keys=False))
    return 0


def _create_topics(args: argparse.Namespace) -> int:
    from driftline.service.topics import create_topics

    config = _load(args.config)
    created = create_topics(config, args.partitions)
    print("created: " + (", ".join(created) if created else "nothing (all exist)"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
