#!/usr/bin/env bash
# Local single-node Apache Kafka broker for driftline development and tests.
#
# A real Kafka (KRaft mode, one process that is both broker and controller),
# run straight from jars that Maven resolves from Maven Central (see pom.xml):
# no Docker and no Apache download site needed.
#
# Usage: deploy/kafka/broker.sh start|stop|restart|status|clean|jars
#   start    start the broker in the background (no-op if already running) and
#            wait until it answers a metadata request; the LAST line on stdout
#            is the bootstrap address, progress goes to stderr:
#              BOOTSTRAP=$(deploy/kafka/broker.sh start | tail -n1)
#   stop     SIGTERM, wait up to KAFKA_STOP_TIMEOUT s, then SIGKILL; exit 0 if nothing ran
#   restart  stop, then start (data is kept)
#   status   print running / not running; exit 0 / 1
#   clean    stop, then delete the data dir (topics, offsets, logs)
#   jars     only resolve the jars into the cache (e.g. to warm a CI machine)
#
# Environment:
#   KAFKA_PORT             bootstrap port on 127.0.0.1 (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default KAFKA_PORT+1)
#   KAFKA_DATA_DIR         this instance's folder: Kafka data, logs, pid file and
#                          generated server.properties (default deploy/kafka/.run).
#                          Use a different one to run a second broker side by side.
#   KAFKA_START_TIMEOUT    seconds `start` waits for the broker to answer (default 90)
#   KAFKA_STOP_TIMEOUT     seconds `stop` waits after SIGTERM (default 30)
#   KAFKA_HEAP_OPTS        JVM heap flags (default "-Xms512m -Xmx1g")
#   JAVA_HOME              Java 17+ to run (default: `java` on PATH)
#
# Jars are cached in deploy/kafka/.cache/lib-<hash of pom.xml>/, so only the
# first start (or the first after pom.xml changes) runs Maven.
set -euo pipefail

# --- configuration ---------------------------------------------------------

# Resolve our own folder so the script works from any cwd.
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
POM=$SCRIPT_DIR/pom.xml
CACHE_DIR=$SCRIPT_DIR/.cache

HOST=127.0.0.1 # loopback only: this broker is for this machine
PORT=${KAFKA_PORT:-9092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}
BOOTSTRAP=$HOST:$PORT
START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
read -r -a HEAP_OPTS <<<"${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}"

DATA_DIR=${KAFKA_DATA_DIR:-$SCRIPT_DIR/.run}
# Absolute, because the broker runs with the caller's cwd and the pid check
# compares the command line (which contains the properties path).
[[ $DATA_DIR == /* ]] || DATA_DIR=$PWD/$DATA_DIR
KAFKA_LOG_DIRS=$DATA_DIR/kraft-data # Kafka's log.dirs: partitions + the metadata log
APP_LOG_DIR=$DATA_DIR/logs          # the broker's own log files (log4j2)
SERVER_LOG=$APP_LOG_DIR/server.log  # main broker log
OUT_FILE=$APP_LOG_DIR/kafka.out     # JVM stdout/stderr (crashes before log4j starts)
CHECK_LOG=$APP_LOG_DIR/readiness-check.log
PROPS=$DATA_DIR/server.properties
PID_FILE=$DATA_DIR/broker.pid
ADDR_FILE=$DATA_DIR/broker.addr # bootstrap address of the running broker
MARKER=$DATA_DIR/.created-by-broker-sh # `clean` only deletes folders that carry it

if [[ -n ${JAVA_HOME:-} ]]; then JAVA=$JAVA_HOME/bin/java; else JAVA=java; fi

# --- helpers ---------------------------------------------------------------

log() { echo "broker.sh: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

is_port_number() { [[ $1 =~ ^[0-9]+$ ]] && ((1 <= $1 && $1 <= 65535)); }

check_settings() {
  is_port_number "$PORT" || die "KAFKA_PORT must be a port number, got '$PORT'"
  is_port_number "$CONTROLLER_PORT" || die "KAFKA_CONTROLLER_PORT must be a port number, got '$CONTROLLER_PORT'"
  [[ $PORT != "$CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"
  [[ $START_TIMEOUT =~ ^[0-9]+$ ]] || die "KAFKA_START_TIMEOUT must be whole seconds"
  [[ $STOP_TIMEOUT =~ ^[0-9]+$ ]] || die "KAFKA_STOP_TIMEOUT must be whole seconds"
}

check_java() {
  command -v "$JAVA" >/dev/null || die "java not found (install Java 17+ or set JAVA_HOME)"
  local version major
  version=$("$JAVA" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n1)
  major=${version%%.*}
  if ! [[ $major =~ ^[0-9]+$ ]] || ((major < 17)); then
    die "Kafka 4.x needs Java 17 or newer; $JAVA is '${version:-unknown}'"
  fi
}

# Serialise start/stop/clean on one data dir, so two concurrent `start`s
# cannot launch two brokers on the same files. fd 8 is closed for the broker.
lock_data_dir() {
  mkdir -p "$DATA_DIR"
  exec 8>"$DATA_DIR/.lock"
  flock -w "$((START_TIMEOUT + STOP_TIMEOUT + 30))" 8 || die "timed out waiting for another broker.sh on $DATA_DIR"
}

# Jars: copied once by Maven into a folder named after pom.xml's hash, so an
# edited pom gets fresh jars and an unchanged one never runs Maven again.
# The folder is filled under a temporary name and renamed when complete, so an
# interrupted Maven run is never mistaken for a good cache.
LIB_DIR=
ensure_jars() {
  local hash
  hash=$(sha256sum "$POM" | cut -c1-16)
  LIB_DIR=$CACHE_DIR/lib-$hash
  [[ -f $LIB_DIR/.complete ]] && return 0

  mkdir -p "$CACHE_DIR"
  exec 9>"$CACHE_DIR/.lock" # two instances starting at once: one Maven run
  flock -w 900 9 || die "timed out waiting for another Maven run in $CACHE_DIR"
  if [[ ! -f $LIB_DIR/.complete ]]; then
    command -v mvn >/dev/null || die "mvn not found: needed once to fetch the Kafka jars"
    log "resolving Kafka jars with Maven into $LIB_DIR (first start only) ..."
    local tmp=$LIB_DIR.tmp.$$
    rm -rf "$tmp"
    # Maven's output goes to a file (even -q -B prints stray ANSI resets) and
    # is shown only when it fails.
    if ! mvn -q -B -f "$POM" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$CACHE_DIR/maven.log" 2>&1; then
      tail -n 40 "$CACHE_DIR/maven.log" >&2
      rm -rf "$tmp"
      die "Maven could not resolve the jars of $POM (full output: $CACHE_DIR/maven.log)"
    fi
    touch "$tmp/.complete"
    rm -rf "$LIB_DIR"
    mv "$tmp" "$LIB_DIR"
    log "cached $(find "$LIB_DIR" -name '*.jar' | wc -l) jars"
  fi
  exec 9>&-
}

# Run a Kafka CLI class: small heap, quick-start JIT, quiet logging (stderr).
TOOL_OPTS=(-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$SCRIPT_DIR/tools-log4j2.properties")
run_tool() { "$JAVA" "${TOOL_OPTS[@]}" -cp "$LIB_DIR/*" "$@" 8>&- 9>&-; }

# Is this pid our broker? kill -0 alone is not enough: after a crash or a
# reboot the pid in a stale pid file may belong to an unrelated process.
is_our_broker() {
  local pid=$1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "kafka.Kafka $PROPS"
}

# Is the process alive? (kill -0 also succeeds on a zombie: an exited child of
# this shell that has not been reaped yet.)
pid_alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ $state != Z ]]
}

# Print the pid of this data dir's running broker; fail if none.
running_pid() {
  local pid
  [[ -f $PID_FILE ]] || return 1
  pid=$(<"$PID_FILE")
  is_our_broker "$pid" || return 1
  echo "$pid"
}

# Does something accept TCP connections on the port? (bash's /dev/tcp: no deps)
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

# The real readiness probe: BrokerApiVersionsCommand (kafka-tools) sends a
# MetadataRequest to the bootstrap address and then ApiVersions to every
# broker it lists. An open port alone proves less: it says nothing about the
# broker being registered with the controller, unfenced and serving metadata.
answers_metadata() {
  local limit=$1 # seconds; bounded by what is left of the start deadline
  timeout "$limit" "$JAVA" "${TOOL_OPTS[@]}" -cp "$LIB_DIR/*" \
    org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$BOOTSTRAP" \
    </dev/null >"$CHECK_LOG" 2>&1 8>&- 9>&- || return 1
  # Expected output: "127.0.0.1:9092 (id: 1 rack: null ...) -> (" + API list.
  grep -q "^$HOST:$PORT (id: 1 " "$CHECK_LOG"
}

show_logs_and_die() {
  log "ERROR: $1"
  log "broker log: $SERVER_LOG"
  if [[ -f $SERVER_LOG ]]; then
    log "--- last 30 lines of $SERVER_LOG ---"
    tail -n 30 "$SERVER_LOG" >&2
  fi
  # JVM-level failures (bad classpath, OutOfMemory, crash) land here instead.
  if [[ -s $OUT_FILE ]]; then
    log "--- last 30 lines of $OUT_FILE (JVM stdout/stderr) ---"
    tail -n 30 "$OUT_FILE" >&2
  fi
  exit 1
}

# Wait until the broker answers, or fail with its log. $2=1: we launched it
# in this call, so on failure stop it ("start" succeeds or leaves nothing).
wait_ready() {
  local pid=$1 launched=$2 started=$SECONDS
  local deadline=$((SECONDS + START_TIMEOUT))
  log "waiting up to ${START_TIMEOUT}s for $BOOTSTRAP to answer a metadata request ..."
  while :; do
    # pid_alive, not is_our_broker: right after the launch the child may not
    # have exec'd java yet, so its command line is still that of bash/nohup.
    if ! pid_alive "$pid"; then
      rm -f "$PID_FILE" "$ADDR_FILE"
      show_logs_and_die "the broker (pid $pid) exited during startup"
    fi
    local left=$((deadline - SECONDS))
    if port_open "$PORT" && answers_metadata "$((left > 5 ? left : 5))"; then
      log "broker ready on $BOOTSTRAP (pid $pid) after $((SECONDS - started))s"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      if ((launched)); then
        log "stopping the broker that did not come up"
        stop_pid "$pid" >/dev/null 2>&1 || true
      fi
      show_logs_and_die "the broker did not answer a metadata request on $BOOTSTRAP within ${START_TIMEOUT}s (KAFKA_START_TIMEOUT)"
    fi
    sleep 0.5
  done
}

write_server_properties() {
  # Regenerated on each start so KAFKA_PORT / KAFKA_CONTROLLER_PORT can change
  # between runs; the cluster id lives in kraft-data/meta.properties.
  cat >"$PROPS" <<EOF
# Generated by deploy/kafka/broker.sh on each start; edits are overwritten.

# KRaft, combined mode: this one process is broker and controller, and the
# controller quorum is just itself (static voters, no dynamic quorum).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
controller.listener.names=CONTROLLER

# Loopback only. Clients bootstrap from PLAINTEXT; CONTROLLER is internal.
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT

log.dirs=$KAFKA_LOG_DIRS

# One node: every internal topic must make do with one replica, or consumer
# groups (__consumer_offsets) and transactions (__transaction_state) never
# become available. Few partitions keep startup and the first group/txn fast.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1

# After a kill -9 the restarted broker cannot register until the controller
# has timed out the dead incarnation's session (default 9 s, then up to 2 s
# of retry backoff). A shorter session makes crash/restart tests quicker; 5 s
# is still far above any heartbeat delay on a loopback, in-process quorum.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=5000

# Tests want a group to start consuming at once, not after the 3 s default.
group.initial.rebalance.delay.ms=0

# Topics that are auto-created get one partition; create topics explicitly
# (AdminClient) when the partition count matters.
auto.create.topics.enable=true
num.partitions=1

# A dev broker: keep a week, in small segments so retention can act on it.
log.retention.hours=168
log.segment.bytes=104857600
EOF
}

# Format the storage once (KRaft needs a cluster id and meta.properties
# before the first start); later starts reuse it, keeping all data.
format_storage_if_needed() {
  [[ -f $KAFKA_LOG_DIRS/meta.properties ]] && return 0
  log "formatting new storage in $KAFKA_LOG_DIRS"
  local cluster_id
  cluster_id=$(run_tool kafka.tools.StorageTool random-uuid | tail -n1)
  [[ $cluster_id =~ ^[A-Za-z0-9_-]{22}$ ]] || die "StorageTool random-uuid returned '$cluster_id'"
  run_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" >&2 ||
    die "StorageTool format failed for $PROPS"
}

stop_pid() {
  local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT))
  log "stopping broker (pid $pid) ..."
  kill -TERM "$pid" 2>/dev/null || true
  # A clean shutdown flushes logs and writes checkpoints: a few seconds.
  while is_our_broker "$pid" && ((SECONDS < deadline)); do sleep 0.5; done
  if is_our_broker "$pid"; then
    log "no exit after ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while is_our_broker "$pid"; do sleep 0.2; done
  fi
  rm -f "$PID_FILE" "$ADDR_FILE"
  log "stopped"
}

# --- commands --------------------------------------------------------------

cmd_start() {
  check_settings
  check_java
  ensure_jars
  mkdir -p "$KAFKA_LOG_DIRS" "$APP_LOG_DIR"
  touch "$MARKER"

  local pid
  if pid=$(running_pid); then
    local addr
    addr=$(cat "$ADDR_FILE" 2>/dev/null || true)
    [[ $addr == "$BOOTSTRAP" ]] ||
      die "the broker of $DATA_DIR already runs (pid $pid) on ${addr:-an unknown address}, not $BOOTSTRAP; stop it, or set KAFKA_DATA_DIR for a second broker"
    log "already running (pid $pid)"
    wait_ready "$pid" 0
    echo "$BOOTSTRAP"
    return 0
  fi
  # A pid file without its process: left by kill -9, a crash or a reboot.
  if [[ -f $PID_FILE ]]; then
    log "removing stale pid file (pid $(<"$PID_FILE") is not a running broker)"
    rm -f "$PID_FILE" "$ADDR_FILE"
  fi

  # Fail early and clearly instead of with a bind error deep in the log.
  local p
  for p in "$PORT" "$CONTROLLER_PORT"; do
    ! port_open "$p" || die "port $HOST:$p is already in use by another process (set KAFKA_PORT / KAFKA_CONTROLLER_PORT)"
  done

  write_server_properties
  format_storage_if_needed

  log "starting Kafka on $BOOTSTRAP (controller $HOST:$CONTROLLER_PORT, data $DATA_DIR)"
  # nohup + redirects: the broker outlives this shell and does not hold its
  # stdout (so `$(broker.sh start)` returns). fds 8/9 (our locks) are closed
  # so the broker does not keep them locked.
  nohup "$JAVA" "${HEAP_OPTS[@]}" -server \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dkafka.logs.dir="$APP_LOG_DIR" \
    -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2.properties" \
    -cp "$LIB_DIR/*" kafka.Kafka "$PROPS" \
    </dev/null >>"$OUT_FILE" 2>&1 8>&- 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"
  echo "$BOOTSTRAP" >"$ADDR_FILE"

  wait_ready "$pid" 1
  echo "$BOOTSTRAP"
}

cmd_stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$PID_FILE" "$ADDR_FILE"
    log "not running"
    return 0
  fi
  stop_pid "$pid"
}

cmd_status() {
  local pid addr
  if pid=$(running_pid); then
    addr=$(cat "$ADDR_FILE" 2>/dev/null || echo "$BOOTSTRAP")
    if port_open "${addr##*:}"; then
      echo "running (pid $pid, $addr, data $DATA_DIR)"
    else
      echo "running (pid $pid, $addr not accepting connections yet, data $DATA_DIR)"
    fi
    return 0
  fi
  echo "not running (data $DATA_DIR)"
  return 1
}

cmd_clean() {
  cmd_stop
  # Never rm -rf a folder we did not create (e.g. a mistyped KAFKA_DATA_DIR).
  [[ -f $MARKER ]] || die "refusing to delete $DATA_DIR: it has no $(basename "$MARKER") marker"
  rm -rf -- "$DATA_DIR"
  log "deleted $DATA_DIR"
}

usage() {
  echo "usage: $0 start|stop|restart|status|clean|jars   (see the header of this file)" >&2
  exit 2
}

[[ $# -eq 1 ]] || usage
case $1 in
start)
  lock_data_dir
  cmd_start
  ;;
stop)
  [[ -d $DATA_DIR ]] || {
    log "not running"
    exit 0
  }
  lock_data_dir
  cmd_stop
  ;;
restart)
  lock_data_dir
  cmd_stop
  cmd_start
  ;;
status)
  cmd_status
  ;;
clean)
  [[ -d $DATA_DIR ]] || {
    log "nothing to clean: $DATA_DIR does not exist"
    exit 0
  }
  lock_data_dir
  cmd_clean
  ;;
jars)
  check_java
  ensure_jars
  echo "$LIB_DIR"
  ;;
*) usage ;;
esac
