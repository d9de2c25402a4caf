#!/usr/bin/env bash
# `make demo`: three models on a real broker; credit-risk degrades at event 6000.
# Runs inside deploy/with-broker.sh, which provides DRIFTLINE_BOOTSTRAP_SERVERS.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=.venv/bin
run="demo-$(date +%s)"
export DRIFTLINE_TOPICS__PREDICTIONS="$run.predictions"
export DRIFTLINE_TOPICS__OUTCOMES="$run.outcomes"
export DRIFTLINE_TOPICS__ALERTS="$run.alerts"
export DRIFTLINE_TOPICS__DEAD_LETTERS="$run.dead-letters"
export DRIFTLINE_TOPICS__KPIS="$run.model-kpis"
export DRIFTLINE_TOPICS__STATE="$run.state"
export DRIFTLINE_GROUP_ID="$run"
log=$(mktemp -t driftline-demo.XXXXXX.log)

echo "== broker: $DRIFTLINE_BOOTSTRAP_SERVERS; topics: $run.*; service log: $log"
"$bin/driftline" create-topics --config deploy/demo/demo.yaml --partitions 2
"$bin/driftline" run --config deploy/demo/demo.yaml 2>"$log" &
service=$!
stop_service() {
  kill -TERM "$service" 2>/dev/null || true
  wait "$service" 2>/dev/null || true
}
trap stop_service EXIT
"$bin/python" deploy/demo/demo.py --run "$run"
