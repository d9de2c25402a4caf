#!/usr/bin/env bash
# Run a command with the local Kafka broker up: start it if none is running, and stop it again
# afterwards (also when the command fails) only if this script started it. Exit status is the
# command's.
set -uo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
broker=$here/kafka/broker.sh

started=0
"$broker" status >/dev/null 2>&1 || started=1
stop_broker() { if [ "$started" = 1 ]; then "$broker" stop >/dev/null 2>&1 || true; fi; }
trap stop_broker EXIT
trap 'exit 130' INT TERM
# start is idempotent and prints the bootstrap address last, whether or not it started anything.
bootstrap=$("$broker" start | tail -n 1) || { echo "with-broker: the broker did not start" >&2; exit 1; }
export DRIFTLINE_BOOTSTRAP_SERVERS=${DRIFTLINE_BOOTSTRAP_SERVERS:-$bootstrap}

"$@"
