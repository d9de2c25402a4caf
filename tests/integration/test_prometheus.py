"""The shipped Prometheus rules and Grafana dashboard against a real Prometheus server scraping a
real ``driftline run`` on the broker: promtool accepts and unit-tests the rules, the model rule
fires for a degrading model and for nothing else, and every PromQL expression parses and names
only metrics the service exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from driftline.service.synthetic import ModelStream, generate

from .conftest import (
    ROOT,
    ServiceProcess,
    Topics,
    free_port,
    new_topics,
    produce,
    produce_events,
    read_all,
    scrape,
    wait_for,
    wait_processed,
)

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "rules_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "driftline.json"

MODEL_ALERT = "DriftlineModelAlertFiring"
DEGRADED = ModelStream("prom-degraded", seed=31, change_at=2500, accuracy_after=0.6)
HEALTHY = ModelStream("prom-healthy", seed=32)
N_DEGRADED, N_HEALTHY = 4000, 3000


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # the run must fail loudly, never skip
        pytest.fail(
            f"`{name}` is not on PATH: run deploy/ensure-tools.sh (`make test` runs it), which "
            "installs the Debian package prometheus (prometheus and promtool)"
        )
    return path


def run(command: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


# -- a real Prometheus server ------------------------------------------------------------------


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = orjson.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def start_prometheus(tmp: Path, target: str) -> Prometheus:
    binary = tool("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        # rules.yml expects the job "driftline".
        "scrape_configs": [
            {
                "job_name": "driftline",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    config_path = tmp / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    checked = run([tool("promtool"), "check", "config", str(config_path)])
    assert checked.returncode == 0, output(checked)
    port = free_port()
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Prometheus(f"http://127.0.0.1:{port}", process, log_path)


# -- driftline with one degrading and one healthy model, watched by Prometheus ------------------


@dataclass
class Stack:
    topics: Topics
    service: ServiceProcess
    prometheus: Prometheus
    consumed: int  # messages driftline consumed from both input topics
    settled_at: float  # wall-clock time by which driftline had processed everything


@pytest.fixture(scope="module")
def stack(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    topics = new_topics(bootstrap, "prometheus")
    service = ServiceProcess(bootstrap, topics, tmp_path_factory.mktemp("driftline"))
    service.config = {"processing": {"kpi_interval_s": 0.5}}
    # Prometheus first, so that it watches the whole run (a pending or firing alert for the
    # healthy model at any moment would stay in its ALERTS series).
    prometheus = start_prometheus(
        tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{service.port}"
    )
    try:
        wait_for(prometheus.ready, 30, f"prometheus to be ready; log: {prometheus.log_path}")
        pairs = [*generate(DEGRADED, N_DEGRADED), *generate(HEALTHY, N_HEALTHY)]
        consumed = produce_events(bootstrap, topics, pairs)
        # One undecodable message, so that the dead-letter counter has a labelled series.
        consumed += produce(bootstrap, [(topics.predictions, None, b"{not json")])
        service.start()
        wait_processed(bootstrap, topics, timeout=60)
        # The labelled gauges set on a timer: the KPIs of both models (every 0.5 s here) and the
        # consumer lag of both input topics (every 5 s).
        wanted = [
            *(
                f'driftline_model_kpi{{metric="accuracy",model_id="{m.model_id}"}}'
                for m in (DEGRADED, HEALTHY)
            ),
            *(
                f'driftline_consumer_lag_messages{{partition="0",topic="{topic}"}}'
                for topic in (topics.predictions, topics.outcomes)
            ),
        ]
        wait_for(
            lambda: (samples := scrape(service.url)) and all(w in samples for w in wanted),
            30,
            f"driftline to export {wanted}",
            interval=0.25,
        )
        yield Stack(topics, service, prometheus, consumed, time.time())
    finally:
        prometheus.stop()
        if service.process is not None and service.process.poll() is None:
            service.stop()


def rfc3339(value: str) -> float:
    """Prometheus' RFC 3339 times carry nanoseconds; datetime takes microseconds."""
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    return datetime.fromisoformat(trimmed).timestamp()


def wait_evaluated_after(prometheus: Prometheus, since: float, group_of: str) -> None:
    """Wait for a scrape that started after ``since`` and an evaluation of the rule group that
    holds ``group_of`` after that scrape ended: its alerts then reflect driftline's state at
    ``since`` or later."""

    def scraped() -> float | None:
        targets = prometheus.api("/api/v1/targets")["activeTargets"]
        if not targets:  # discovery hands the static target over within about 5 s
            return None
        (target,) = targets
        started = rfc3339(target["lastScrape"])
        if target["health"] == "up" and started > since:
            return started + float(target["lastScrapeDuration"])
        return None

    scrape_end = wait_for(scraped, 20, "a successful scrape of driftline after it settled")

    def evaluated() -> bool:
        for group in prometheus.api("/api/v1/rules")["groups"]:
            if any(rule["name"] == group_of for rule in group["rules"]):
                return bool(rfc3339(group["lastEvaluation"]) > scrape_end)
        pytest.fail(f"no rule group of Prometheus holds {group_of}")

    wait_for(evaluated, 20, f"an evaluation of {group_of}'s group after that scrape")


# -- the tests ---------------------------------------------------------------------------------


def test_promtool_checks_and_unit_tests_the_shipped_rules() -> None:
    promtool = tool("promtool")
    checked = run([promtool, "check", "rules", str(RULES)])
    assert checked.returncode == 0, output(checked)
    tested = run([promtool, "test", "rules", str(RULES_TEST)], timeout=60)
    assert tested.returncode == 0, output(tested)
    # The unit tests cover the model rule.
    cases = yaml.safe_load(RULES_TEST.read_text())["tests"]
    assert any(
        check.get("alertname") == MODEL_ALERT and check.get("exp_alerts")
        for case in cases
        for check in case.get("alert_rule_test", [])
    ), f"{RULES_TEST.name} has no case in which {MODEL_ALERT} fires"


def test_the_model_rule_fires_for_the_degrading_model_and_nothing_fires_for_the_healthy_one(
    stack: Stack,
) -> None:
    prometheus, service = stack.prometheus, stack.service
    loaded = {
        rule["name"]
        for group in prometheus.api("/api/v1/rules")["groups"]
        for rule in group["rules"]
    }
    assert MODEL_ALERT in loaded, f"Prometheus loaded no rule {MODEL_ALERT} from {RULES}"
    wait_evaluated_after(prometheus, stack.settled_at, MODEL_ALERT)

    # Prometheus has everything driftline consumed, and both models' KPIs.
    consumed = prometheus.query('sum(driftline_events_consumed_total{job="driftline"})')
    assert consumed and float(consumed[0]["value"][1]) == stack.consumed
    for model in (DEGRADED, HEALTHY):
        kpi = f'driftline_model_kpi{{job="driftline", model_id="{model.model_id}"}}'
        assert prometheus.query(kpi), f"Prometheus has no KPI of {model.model_id}"

    # The degrading model: one firing alert per kind and severity driftline has firing for it.
    def firing_in_driftline() -> set[tuple[str, str]]:
        series = re.compile(
            rf'^driftline_alerts_firing\{{kind="(\w+)",model_id="{DEGRADED.model_id}",'
            r'severity="(\w+)"\}$'
        )
        return {
            (m[1], m[2])
            for name, value in scrape(service.url).items()
            if (m := series.match(name)) and value > 0
        }

    def firing_as_expected() -> list[dict[str, Any]] | None:
        alerts = [
            a
            for a in prometheus.api("/api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] == MODEL_ALERT
            and a["labels"].get("model_id") == DEGRADED.model_id
            and a["state"] == "firing"
        ]
        pairs = firing_in_driftline()
        got = {(a["labels"]["kind"], a["labels"]["severity"]) for a in alerts}
        return alerts if pairs and got == pairs else None

    firing = wait_for(
        firing_as_expected,
        30,
        f"{MODEL_ALERT} to fire for {DEGRADED.model_id}, once per kind and severity driftline "
        "has firing",
        interval=0.5,
    )
    published = [orjson.loads(m.value()) for m in read_all(service.bootstrap, stack.topics.alerts)]
    fired = {
        (a["kind"], a["severity"])
        for a in published
        if a["model_id"] == DEGRADED.model_id
        and a["kind"] != "incident"
        and a["status"] == "firing"
    }
    for alert in firing:
        labels = alert["labels"]
        assert set(labels) == {"alertname", "model_id", "kind", "severity"}, labels
        assert (labels["kind"], labels["severity"]) in fired, (labels, fired)
        assert alert["annotations"]["summary"] == (
            f"Model {DEGRADED.model_id}: driftline {labels['kind']} alert firing "
            f"({labels['severity']})"
        )
        assert f"for model {DEGRADED.model_id}." in alert["annotations"]["description"]

    # The healthy model: no alert of any rule, pending or firing, now or at any time of the run.
    now = [
        a
        for a in prometheus.api("/api/v1/alerts")["alerts"]
        if a["labels"].get("model_id") == HEALTHY.model_id
    ]
    assert now == [], now
    ever = prometheus.query(f'count_over_time(ALERTS{{model_id="{HEALTHY.model_id}"}}[10m])')
    assert ever == [], ever
    assert all(a["model_id"] != HEALTHY.model_id for a in published)


# -- every PromQL expression parses and names exported metrics ---------------------------------

GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]+)"')
IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
GRAFANA_DURATIONS = {"__rate_interval", "__interval", "__range", "__range_s", "__range_ms"}
LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", re.S)
KPI_METRIC = re.compile(r'driftline_model_kpi\{[^}]*\bmetric="(\w+)"')


def grafana_substitute(expr: str) -> str:
    """Grafana's variables replaced by what a query would carry: a duration for the interval
    variables, a plain word for the others (a variable outside a string then reads as a metric
    name the service does not export, and fails the test visibly)."""

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        return "5m" if name in GRAFANA_DURATIONS else f"var_{name}"

    return GRAFANA_VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, aggregations,
    keywords, label names (in matchers and grouping clauses) or numbers and durations."""
    names = set(NAME_MATCHER.findall(expr))
    bare = STRINGS.sub('""', expr)
    bare = re.sub(r"\{[^{}]*\}", " ", bare)  # label matchers
    bare = re.sub(r"\[[^\[\]]*\]", " ", bare)  # ranges and subqueries
    bare = GROUPING.sub(" ", bare)
    for match in IDENTIFIER.finditer(bare):
        word = match.group()
        if word.lower() in KEYWORDS or re.match(r"\s*\(", bare[match.end() :]):
            continue  # a keyword, or a function or aggregation called
        names.add(word)
    return names


def rule_expressions() -> tuple[dict[str, str], set[str]]:
    exprs, recorded = {}, set()
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            exprs[f"rules.yml {group['name']}/{name}"] = str(rule["expr"])
            if "record" in rule:
                recorded.add(rule["record"])
    return exprs, recorded


def dashboard_expressions() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs: dict[str, str] = {}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for i, target in enumerate(node.get("targets") or []):
                if isinstance(target, dict):
                    assert target.get("expr"), f"{where} target {i} has no expr: {target}"
                    exprs[f"dashboard {where} [{node.get('title')!r}] target {i}"] = target["expr"]
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(dashboard.get("panels", []), "panels")
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query
        selector = LABEL_VALUES.match(query)
        exprs[f"dashboard variable {variable['name']}"] = selector[1] if selector else query
    return exprs


def exported_metrics(url: str) -> tuple[set[str], set[str]]:
    """(every series name the service declares, those with a sample now) from its /metrics.
    prometheus_client writes the HELP and TYPE lines of a labelled metric before any child exists,
    so a metric whose labels this run did not produce (no model failed, no reload) is still seen."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    declared: set[str] = set()
    sampled: set[str] = set()
    suffixes = {
        "counter": ("", "_created"),
        "gauge": ("",),
        "untyped": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
    }
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            declared.update(name + suffix for suffix in suffixes.get(kind, ("",)))
        elif line and not line.startswith("#"):
            sampled.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return declared | sampled, sampled


# Referenced metrics whose only series carry a label that this run may not produce: a model
# failure, a librdkafka error, a config reload. Everything else must have a sample after the
# run, not only a TYPE line.
MAY_HAVE_NO_SAMPLE = {
    "driftline_model_failures_total",
    "driftline_kafka_errors_total",
    "driftline_config_reloads_total",
}


def test_every_promql_expression_parses_and_names_only_exported_metrics(
    stack: Stack, tmp_path: Path
) -> None:
    rule_exprs, recorded = rule_expressions()
    exprs = {**rule_exprs, **dashboard_expressions()}
    assert len(exprs) > 40, sorted(exprs)  # the walk found the rules and the dashboard
    parsed = {where: grafana_substitute(expr) for where, expr in exprs.items()}

    # promtool parses each expression as the expression of a recording rule.
    wrapped = tmp_path / "expressions.yml"
    wrapped.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "expressions",
                        "rules": [
                            {"record": f"expression_{i}", "expr": expr}
                            for i, expr in enumerate(parsed.values())
                        ],
                    }
                ]
            },
            sort_keys=False,
        )
    )
    checked = run([tool("promtool"), "check", "rules", str(wrapped)])
    index = "\n".join(
        f"expression_{i}: {where}: {' '.join(e.split())}"
        for i, (where, e) in enumerate(parsed.items())
    )
    assert checked.returncode == 0, (
        f"{output(checked)}\n--- where each expression comes from\n{index}"
    )

    declared, sampled = exported_metrics(stack.service.url)
    allowed = declared | recorded | {"up"}
    unknown = {
        where: sorted(names - allowed)
        for where, expr in parsed.items()
        if (names := metric_names(expr)) - allowed
    }
    assert unknown == {}, f"metrics the service does not export: {unknown}"
    referenced = set().union(*map(metric_names, parsed.values())) - recorded - {"up"}
    assert "driftline_alerts_firing" in referenced  # the extraction sees selectors at all
    assert referenced - sampled <= MAY_HAVE_NO_SAMPLE, sorted(referenced - sampled)

    # The KPI panels name KPIs by value of the label `metric`: each must be one the service sets.
    kpis = {
        m[1]
        for name in scrape(stack.service.url)
        if (m := re.search(r'^driftline_model_kpi\{.*metric="(\w+)"', name))
    }
    shown = {kpi for expr in exprs.values() for kpi in KPI_METRIC.findall(expr)}
    assert shown and shown <= kpis, (sorted(shown - kpis), sorted(kpis))
