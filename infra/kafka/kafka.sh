#!/usr/bin/env bash
# Local Apache Kafka (KRaft, loopback only) for development and tests, provisioned from Maven Central.
# No Docker needed: the broker jars come from infra/kafka/pom.xml via Maven. See infra/README.md.
#
#   kafka.sh fetch                          download the broker jars once (stamp file, idempotent)
#   kafka.sh start [--brokers 1|3]          start a single node, or a 3-node quorum (fault tests)
#   kafka.sh start --node N                 (re)start one node of a running/stopped cluster
#   kafka.sh stop [--brokers 1|3] [--node N]
#   kafka.sh status | bootstrap | logs [-f] [--node N] | reset   (all take --brokers 1|3)
#
# Progress goes to stderr; `start` and `bootstrap` print only the bootstrap address on stdout, so
# `BOOT=$(infra/kafka/kafka.sh start)` works.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
POM="$HERE/pom.xml"
TEMPLATE="$HERE/server.properties.tmpl"
LOG4J_CONF="$HERE/log4j2.properties"

CACHE="${QIXIN_CACHE:-$ROOT/.cache}"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1)"
[[ -n "$KAFKA_VERSION" ]] || { echo "kafka: cannot read <kafka.version> from $POM" >&2; exit 1; }
LIBS="$CACHE/kafka/$KAFKA_VERSION/libs"
STAMP="$CACHE/kafka/$KAFKA_VERSION/.fetched"
RUN="$CACHE/run"
LOGS="$CACHE/logs"

HEAP="${KAFKA_HEAP:--Xms256m -Xmx512m}"
# The JIT: C1 only. These brokers live for a test run, a benchmark or a demo; with full tiered
# compilation C2 kept a core's share busy for minutes (a benchmark's broker: 44-50 s of its 58-59 s
# of CPU were compilation; with C1 only 4 of 33 s; bench/README.md). KAFKA_JIT= (empty) for C2.
JIT="${KAFKA_JIT--XX:TieredStopAtLevel=1}"
LOG_LEVEL="${KAFKA_LOG_LEVEL:-INFO}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
CONTROLLER_OFFSET="${KAFKA_CONTROLLER_OFFSET:-1000}"

say() { echo "kafka: $*" >&2; }
die() { echo "kafka: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- tools

java_bin() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then echo "$JAVA_HOME/bin/java"; else echo java; fi
}

# Java and Maven are expected on the machine; on a Debian box run as root we can add them ourselves.
ensure_tool() { # command apt-package
  command -v "$1" >/dev/null 2>&1 && return 0
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "$1 not found: installing Debian package $2 (apt-get)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
  else
    die "$1 not found; install $2 (Java 17+ and Maven are needed to provision Kafka)"
  fi
}

ensure_java() {
  [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]] || ensure_tool java openjdk-17-jre-headless
  local v
  v="$("$(java_bin)" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
  [[ -n "$v" && "$v" -ge 17 ]] || die "Kafka $KAFKA_VERSION needs Java 17+, found '${v:-unknown}' ($(java_bin))"
}

# ---------------------------------------------------------------- fetch

fetched() { [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(sha256sum "$POM" | cut -d' ' -f1)" ]]; }

cmd_fetch() {
  if fetched; then
    say "Kafka $KAFKA_VERSION jars already present in $LIBS"
    return 0
  fi
  ensure_tool mvn maven
  mkdir -p "$CACHE/kafka"
  local lock_fd
  exec {lock_fd}>"$CACHE/kafka/.fetch.lock"
  flock "$lock_fd"
  if fetched; then exec {lock_fd}>&-; return 0; fi  # another process fetched while we waited
  say "downloading Apache Kafka $KAFKA_VERSION (org.apache.kafka:kafka_2.13 + runtime deps, slf4j-api,"
  say "log4j-slf4j2-impl, ~45 MB) from Maven Central into $LIBS"
  local tmp="$LIBS.tmp.$$" t0=$SECONDS
  rm -rf "$tmp"
  # shellcheck disable=SC2086  # KAFKA_MVN_ARGS is a list of extra Maven arguments.
  # Maven 3.8 prints colour resets even in batch mode; strip them (pipefail keeps Maven's exit code).
  if ! mvn -q -B -Dstyle.color=never -f "$POM" ${KAFKA_MVN_ARGS:-} dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2; then
    rm -rf "$tmp"
    die "Maven could not resolve $POM (is Maven Central reachable?)"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing after Maven run"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  sha256sum "$POM" | cut -d' ' -f1 >"$STAMP"
  say "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS" | cut -f1)) in $((SECONDS - t0)) s:"
  (cd "$LIBS" && printf '%s\n' *.jar | paste -sd' ' | fold -s -w 100 | sed 's/^/  /') >&2
  exec {lock_fd}>&-
}

# ---------------------------------------------------------------- mode / node layout

mode_name() { if [[ $1 == 3 ]]; then echo cluster3; else echo single; fi; }

# Sets MODE, NODES, PORT, DATA_DIR, STATE for broker count $1. A recorded state (written by start)
# wins unless $2 == fresh, i.e. a full start with nothing running, where the environment wins.
load_mode() {
  local brokers=$1 how=${2:-recorded}
  [[ $brokers == 1 || $brokers == 3 ]] || die "--brokers must be 1 or 3 (got '$brokers')"
  NODES=$brokers
  MODE="$(mode_name "$brokers")"
  STATE="$RUN/kafka-$MODE.state"
  local default_port=9092
  [[ $brokers == 3 ]] && default_port=9192  # so the two modes can run side by side by default
  PORT="${KAFKA_PORT:-$default_port}"
  DATA_DIR="${KAFKA_DATA_DIR:-$CACHE/kafka-data/$MODE}"
  if [[ $how != fresh && -f "$STATE" ]]; then
    local S_PORT S_DATA_DIR
    # shellcheck disable=SC1090
    source "$STATE"
    PORT=$S_PORT
    DATA_DIR=$S_DATA_DIR
  fi
  [[ "$PORT" =~ ^[0-9]+$ ]] || die "KAFKA_PORT must be a number (got '$PORT')"
}

write_state() {
  mkdir -p "$RUN"
  printf 'S_PORT=%q\nS_DATA_DIR=%q\nS_VERSION=%q\n' "$PORT" "$DATA_DIR" "$KAFKA_VERSION" >"$STATE"
}

# One start/stop at a time per mode. The lock fd must not leak into the broker JVMs (they would hold
# the lock for their whole life), hence the explicit close in launch_node/format_nodes.
LOCK_FD=""
lock_mode() {
  mkdir -p "$RUN"
  exec {LOCK_FD}>"$RUN/kafka-$MODE.lock"
  flock "$LOCK_FD"
}
unlock_mode() {
  if [[ -n "$LOCK_FD" ]]; then exec {LOCK_FD}>&-; LOCK_FD=""; fi
}
# Runs a command in the background with the lock fd closed.
spawn() {
  if [[ -n "$LOCK_FD" ]]; then "$@" {LOCK_FD}>&- & else "$@" & fi
}

node_port() { echo $((PORT + $1 - 1)); }
ctrl_port() { echo $((PORT + $1 - 1 + CONTROLLER_OFFSET)); }
node_props() { echo "$RUN/kafka-$MODE-node$1.properties"; }
node_pidfile() { echo "$RUN/kafka-$MODE-node$1.pid"; }
node_log() { echo "$LOGS/kafka-$MODE-node$1.log"; }
node_out() { echo "$LOGS/kafka-$MODE-node$1.out"; }
node_dir() { echo "$DATA_DIR/node-$1"; }

bootstrap_addr() {
  local i out=""
  for ((i = 1; i <= NODES; i++)); do out+="${out:+,}127.0.0.1:$(node_port "$i")"; done
  echo "$out"
}

# Prints the pid of node $1 if its JVM is alive; the command line must name our properties file,
# so a recycled pid never counts as "running".
node_pid() {
  local f pid
  f="$(node_pidfile "$1")"
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$(node_props "$1")" || return 1
  echo "$pid"
}

running_count() {
  local i n=0
  for ((i = 1; i <= NODES; i++)); do node_pid "$i" >/dev/null && n=$((n + 1)); done
  echo "$n"
}

# Without --brokers, commands act on the modes found here. If KAFKA_PORT is set, only a mode recorded
# on that port counts, so `KAFKA_PORT=9092 kafka.sh stop` never touches a 3-broker cluster elsewhere.
port_matches() { [[ -z "${KAFKA_PORT:-}" || ! -f "$STATE" || "$PORT" == "$KAFKA_PORT" ]]; }

# Modes (1 and/or 3) with at least one live JVM.
running_modes() {
  local b
  for b in 1 3; do
    load_mode "$b"
    port_matches && [[ "$(running_count)" -gt 0 ]] && echo "$b"
  done
  return 0
}

# Modes that were ever started here (state recorded) or have a live JVM.
known_modes() {
  local b
  for b in 1 3; do
    load_mode "$b"
    port_matches && [[ -f "$STATE" || "$(running_count)" -gt 0 ]] && echo "$b"
  done
  return 0
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Sends a Kafka ApiVersions v0 request and checks the reply carries our correlation id and error 0.
# The listener port is bound early in startup, but requests are only served once the broker has caught
# up with the metadata log and been unfenced, so an answer means "ready for clients".
kafka_ping() {
  # shellcheck disable=SC2016  # $1 and $reply belong to the inner bash
  timeout 3 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    # size=14 | api_key=18 ApiVersions | version=0 | correlation_id=0x51780001 | client_id="qx"+pad
    printf "\x00\x00\x00\x0e\x00\x12\x00\x00\x51\x78\x00\x01\x00\x04qxpg" >&3
    reply=$(head -c 10 <&3 | od -An -tx1 | tr -d " \n")
    [[ ${reply:8:8} == 51780001 && ${reply:16:4} == 0000 ]]
  ' kafka_ping "$1" 2>/dev/null
}

# ---------------------------------------------------------------- start

render_props() { # node
  local i=$1 voters="" j text
  for ((j = 1; j <= NODES; j++)); do voters+="${voters:+,}$j@127.0.0.1:$(ctrl_port "$j")"; done
  local rf=1 isr=1
  if [[ $NODES == 3 ]]; then rf=3; isr=2; fi
  text="$(<"$TEMPLATE")"
  text="${text//@NODE_ID@/$i}"
  text="${text//@VOTERS@/$voters}"
  text="${text//@PORT@/$(node_port "$i")}"
  text="${text//@CONTROLLER_PORT@/$(ctrl_port "$i")}"
  text="${text//@LOG_DIR@/$(node_dir "$i")}"
  text="${text//@RF@/$rf}"
  text="${text//@MIN_ISR@/$isr}"
  printf '%s\n' "$text" >"$(node_props "$i")"
}

jvm_log_opts() { # log-file
  echo "-Dlog4j2.configurationFile=$LOG4J_CONF -Dqixin.kafka.logfile=$1 -Dqixin.kafka.level=$LOG_LEVEL"
}

cluster_id() {
  local f="$DATA_DIR/cluster.id" j id
  if [[ ! -s "$f" ]]; then
    # Reuse the id of any node already formatted (the file may have been deleted by hand).
    for ((j = 1; j <= NODES; j++)); do
      id="$(sed -n 's/^cluster.id=//p' "$(node_dir "$j")/meta.properties" 2>/dev/null || true)"
      [[ -n "$id" ]] && break
    done
    # Same shape as `StorageTool random-uuid` (16 random bytes, URL-safe base64) without a JVM start,
    # and like Kafka's own never starting with "-" (the tool's argument parser would read an option).
    while [[ -z "${id:-}" || "$id" == -* ]]; do
      id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    done
    echo "$id" >"$f"
  fi
  cat "$f"
}

format_nodes() { # nodes...
  local i cid pids=() todo=()
  for i in "$@"; do [[ -f "$(node_dir "$i")/meta.properties" ]] || todo+=("$i"); done
  [[ ${#todo[@]} -gt 0 ]] || return 0
  cid="$(cluster_id)"
  say "formatting KRaft storage (cluster id $cid) for node(s) ${todo[*]} in $DATA_DIR"
  for i in "${todo[@]}"; do
    mkdir -p "$(node_dir "$i")"
    # shellcheck disable=SC2046
    spawn "$(java_bin)" -Xmx256m $(jvm_log_opts "$(node_log "$i")") -cp "$LIBS/*" \
      kafka.tools.StorageTool format --cluster-id="$cid" -c "$(node_props "$i")" >>"$(node_out "$i")" 2>&1
    pids+=($!)
  done
  local k
  for k in "${!pids[@]}"; do
    wait "${pids[$k]}" || { tail -n 20 "$(node_out "${todo[$k]}")" >&2; die "formatting node ${todo[$k]} failed"; }
  done
}

launch_node() { # node
  local i=$1 heap opts
  read -ra heap <<<"$HEAP"
  read -ra opts <<<"$JIT $(jvm_log_opts "$(node_log "$i")") ${KAFKA_JVM_OPTS:-}"
  echo "=== $(date -Is) starting node $i" >>"$(node_out "$i")"
  # setsid: the broker must not die with the terminal or the test run that started it.
  spawn nohup setsid "$(java_bin)" "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true "${opts[@]}" -cp "$LIBS/*" kafka.Kafka "$(node_props "$i")" \
    >>"$(node_out "$i")" 2>&1 </dev/null
  echo $! >"$(node_pidfile "$i")"
}

show_failure() { # node
  say "node $1 log tail ($(node_log "$1")):"
  tail -n 25 "$(node_log "$1")" >&2 2>/dev/null || true
  tail -n 10 "$(node_out "$1")" >&2 2>/dev/null || true
}

wait_ready() { # nodes...
  local deadline=$((SECONDS + START_TIMEOUT)) pending=("$@") i next
  while ((${#pending[@]})); do
    next=()
    for i in "${pending[@]}"; do
      if ! node_pid "$i" >/dev/null; then
        # Just after launch the pid may still carry the forking shell's command line (fork, then
        # exec; slow on a busy machine): only a pid that is gone means the node exited.
        if kill -0 "$(cat "$(node_pidfile "$i")" 2>/dev/null)" 2>/dev/null; then
          next+=("$i")
          continue
        fi
        show_failure "$i"
        stop_nodes "$@"
        die "node $i exited during startup"
      fi
      kafka_ping "$(node_port "$i")" || next+=("$i")
    done
    pending=("${next[@]+"${next[@]}"}")
    ((${#pending[@]})) || break
    if ((SECONDS >= deadline)); then
      for i in "${pending[@]}"; do show_failure "$i"; done
      stop_nodes "$@"
      die "node(s) ${pending[*]} not ready after ${START_TIMEOUT}s; stopped"
    fi
    sleep 0.5
  done
}

cmd_start() {
  local brokers="${KAFKA_BROKERS:-}" node=""
  while (($#)); do
    case "$1" in
      --brokers) brokers="${2:?--brokers needs 1 or 3}"; shift 2 ;;
      --brokers=*) brokers="${1#*=}"; shift ;;
      --node) node="${2:?--node needs a node id}"; shift 2 ;;
      --node=*) node="${1#*=}"; shift ;;
      *) die "start: unknown argument '$1'" ;;
    esac
  done
  if [[ -z "$brokers" ]]; then
    brokers=1
    [[ -n "$node" && -f "$RUN/kafka-cluster3.state" ]] && brokers=3
  fi
  load_mode "$brokers"
  mkdir -p "$RUN" "$LOGS"
  lock_mode

  local up todo=() i p pid
  up="$(running_count)"
  if [[ -n "$node" ]]; then
    [[ "$node" =~ ^[0-9]+$ && $node -ge 1 && $node -le $NODES ]] || die "--node must be 1..$NODES in $MODE mode"
    [[ -f "$STATE" ]] || die "$MODE Kafka was never started here; run 'start --brokers $NODES' first"
    if pid="$(node_pid "$node")"; then
      say "node $node ($MODE) already running (pid $pid) on 127.0.0.1:$(node_port "$node")"
      bootstrap_addr
      return 0
    fi
    # A lone voter of a 3-node quorum never gets elected, and the broker gives up after 60 s
    # (initial.broker.registration.timeout.ms): refuse instead of waiting for that.
    [[ $NODES -eq 1 || $up -gt 0 ]] || die "no other $MODE node is running; one node cannot form a quorum. Use 'start --brokers $NODES'"
    todo=("$node")
  elif [[ $up -eq $NODES ]]; then
    say "already running ($MODE, $NODES node(s), pids $(for ((i = 1; i <= NODES; i++)); do node_pid "$i"; done | paste -sd' ')); nothing to do"
    bootstrap_addr
    return 0
  else
    # Nothing running: the environment decides port and data dir. Partly running: keep the recorded ones.
    [[ $up -eq 0 ]] && load_mode "$brokers" fresh
    for ((i = 1; i <= NODES; i++)); do node_pid "$i" >/dev/null || todo+=("$i"); done
  fi

  fetched || cmd_fetch
  ensure_java
  for i in "${todo[@]}"; do
    for p in "$(node_port "$i")" "$(ctrl_port "$i")"; do
      port_open "$p" && die "port $p (node $i) is already in use by another process; set KAFKA_PORT"
    done
  done
  if [[ -e "$DATA_DIR" && ! -e "$DATA_DIR/.qixin-kafka" && -n "$(ls -A "$DATA_DIR")" ]]; then
    die "$DATA_DIR is not empty and was not created by kafka.sh; refusing to use it"
  fi
  mkdir -p "$DATA_DIR"
  touch "$DATA_DIR/.qixin-kafka"
  write_state
  for i in "${todo[@]}"; do render_props "$i"; done
  format_nodes "${todo[@]}"
  local t0=$SECONDS
  say "starting $MODE Kafka $KAFKA_VERSION node(s) ${todo[*]} (heap: $HEAP; logs: $LOGS/kafka-$MODE-node*.log)"
  for i in "${todo[@]}"; do launch_node "$i"; done
  wait_ready "${todo[@]}"
  say "ready in $((SECONDS - t0)) s: $MODE, node(s) ${todo[*]} up, bootstrap $(bootstrap_addr)"
  unlock_mode
  bootstrap_addr
}

# ---------------------------------------------------------------- stop

# SIGTERM all given nodes at once (combined nodes shut down cleanly only while the quorum is still up),
# then wait, then SIGKILL what is left.
stop_nodes() { # nodes...
  local i pid pids=() deadline=$((SECONDS + STOP_TIMEOUT))
  for i in "$@"; do
    if pid="$(node_pid "$i")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$i:$pid")
    fi
    rm -f "$(node_pidfile "$i")"
  done
  [[ ${#pids[@]} -gt 0 ]] || return 0
  local entry alive
  while :; do
    alive=0
    for entry in "${pids[@]}"; do kill -0 "${entry#*:}" 2>/dev/null && alive=1; done
    ((alive)) || break
    if ((SECONDS >= deadline)); then
      for entry in "${pids[@]}"; do
        if kill -0 "${entry#*:}" 2>/dev/null; then
          say "node ${entry%%:*} (pid ${entry#*:}) still up after ${STOP_TIMEOUT}s: SIGKILL"
          kill -KILL "${entry#*:}" 2>/dev/null || true
        fi
      done
      sleep 0.5
      break
    fi
    sleep 0.3
  done
  say "stopped $MODE node(s): ${pids[*]%%:*}"
}

parse_common() { # sets BROKERS_ARG NODE_ARG FOLLOW_ARG
  BROKERS_ARG="${KAFKA_BROKERS:-}" NODE_ARG="" FOLLOW_ARG=""
  while (($#)); do
    case "$1" in
      --brokers) BROKERS_ARG="${2:?--brokers needs 1 or 3}"; shift 2 ;;
      --brokers=*) BROKERS_ARG="${1#*=}"; shift ;;
      --node) NODE_ARG="${2:?--node needs a node id}"; shift 2 ;;
      --node=*) NODE_ARG="${1#*=}"; shift ;;
      -f | --follow) FOLLOW_ARG=1; shift ;;
      *) die "unknown argument '$1'" ;;
    esac
  done
}

cmd_stop() {
  parse_common "$@"
  local modes b
  if [[ -n "$BROKERS_ARG" ]]; then modes=("$BROKERS_ARG")
  else
    mapfile -t modes < <(running_modes)
    if [[ -n "$NODE_ARG" && ${#modes[@]} -gt 1 ]]; then modes=(3); fi
  fi
  if [[ ${#modes[@]} -eq 0 ]]; then say "not running${KAFKA_PORT:+ on port $KAFKA_PORT}"; return 0; fi
  for b in "${modes[@]}"; do
    load_mode "$b"
    local i nodes=()
    lock_mode
    if [[ -n "$NODE_ARG" ]]; then
      [[ "$NODE_ARG" =~ ^[0-9]+$ && $NODE_ARG -ge 1 && $NODE_ARG -le $NODES ]] || die "--node must be 1..$NODES in $MODE mode"
      nodes=("$NODE_ARG")
    else
      for ((i = 1; i <= NODES; i++)); do nodes+=("$i"); done
    fi
    if [[ "$(for i in "${nodes[@]}"; do node_pid "$i" || true; done)" == "" ]]; then
      say "$MODE: node(s) ${nodes[*]} not running"
      for i in "${nodes[@]}"; do rm -f "$(node_pidfile "$i")"; done
    else
      stop_nodes "${nodes[@]}"
    fi
    unlock_mode
  done
}

# ---------------------------------------------------------------- status / bootstrap / logs / reset

cmd_status() {
  parse_common "$@"
  local modes b i pid rc=3 any=0 up
  if [[ -n "$BROKERS_ARG" ]]; then modes=("$BROKERS_ARG"); else mapfile -t modes < <(known_modes); fi
  for b in "${modes[@]}"; do
    load_mode "$b"
    up="$(running_count)"
    any=1
    if [[ $up -eq $NODES ]]; then
      echo "$MODE: running ($NODES node(s)), Kafka $KAFKA_VERSION, bootstrap $(bootstrap_addr)"
      rc=0
    elif [[ $up -gt 0 ]]; then
      echo "$MODE: degraded ($up of $NODES nodes up), bootstrap $(bootstrap_addr)"
      [[ $rc -eq 0 ]] || rc=4
    else
      echo "$MODE: not running (data in $DATA_DIR)"
    fi
    for ((i = 1; i <= NODES; i++)); do
      if pid="$(node_pid "$i")"; then
        if kafka_ping "$(node_port "$i")"; then
          echo "  node $i: up, pid $pid, 127.0.0.1:$(node_port "$i") (controller :$(ctrl_port "$i"))"
        else
          echo "  node $i: pid $pid alive but not answering on 127.0.0.1:$(node_port "$i")"
        fi
      elif [[ $up -gt 0 ]]; then
        echo "  node $i: down"
      fi
    done
  done
  ((any)) || echo "kafka: not running${KAFKA_PORT:+ on port $KAFKA_PORT}"
  return $rc
}

cmd_bootstrap() {
  parse_common "$@"
  local modes
  if [[ -n "$BROKERS_ARG" ]]; then modes=("$BROKERS_ARG")
  else
    mapfile -t modes < <(running_modes)
    [[ ${#modes[@]} -le 1 ]] || die "both single and 3-broker Kafka are running; pass --brokers 1 or 3"
    [[ ${#modes[@]} -eq 1 ]] || modes=(1)
  fi
  load_mode "${modes[0]}"
  # Not running: print what the next `start` would use.
  [[ "$(running_count)" -gt 0 ]] || load_mode "${modes[0]}" fresh
  bootstrap_addr
}

cmd_logs() {
  parse_common "$@"
  local modes b i files=()
  if [[ -n "$BROKERS_ARG" ]]; then modes=("$BROKERS_ARG")
  else
    mapfile -t modes < <(running_modes)
    [[ ${#modes[@]} -gt 0 ]] || mapfile -t modes < <(known_modes)
  fi
  for b in "${modes[@]}"; do
    load_mode "$b"
    for ((i = 1; i <= NODES; i++)); do
      [[ -z "$NODE_ARG" || "$NODE_ARG" == "$i" ]] || continue
      [[ -f "$(node_log "$i")" ]] && files+=("$(node_log "$i")")
    done
  done
  [[ ${#files[@]} -gt 0 ]] || die "no Kafka log files under $LOGS"
  if [[ -n "$FOLLOW_ARG" ]]; then exec tail -n 50 -F "${files[@]}"; fi
  tail -n 200 "${files[@]}"
}

cmd_reset() {
  parse_common "$@"
  local modes b i
  if [[ -n "$BROKERS_ARG" ]]; then modes=("$BROKERS_ARG"); else modes=(1 3); fi
  for b in "${modes[@]}"; do
    load_mode "$b"
    [[ -n "$BROKERS_ARG" ]] || port_matches || continue
    local nodes=()
    for ((i = 1; i <= NODES; i++)); do nodes+=("$i"); done
    stop_nodes "${nodes[@]}"
    if [[ -d "$DATA_DIR" ]]; then
      if [[ -e "$DATA_DIR/.qixin-kafka" ]]; then
        rm -rf "$DATA_DIR"
        say "$MODE: wiped $DATA_DIR"
      else
        say "$MODE: $DATA_DIR was not created by kafka.sh; left alone"
      fi
    fi
    for ((i = 1; i <= NODES; i++)); do
      rm -f "$(node_props "$i")" "$(node_pidfile "$i")" "$(node_log "$i")"* "$(node_out "$i")"
    done
    rm -f "$STATE"
  done
}

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<EOF

Environment: QIXIN_CACHE (default <repo>/.cache), KAFKA_PORT (9092 single, 9192 3-broker),
KAFKA_DATA_DIR, KAFKA_HEAP ("-Xms256m -Xmx512m"), KAFKA_LOG_LEVEL (INFO), KAFKA_BROKERS (1|3),
KAFKA_START_TIMEOUT (90), KAFKA_STOP_TIMEOUT (30), KAFKA_JIT (-XX:TieredStopAtLevel=1), KAFKA_JVM_OPTS, KAFKA_MVN_ARGS, JAVA_HOME.
Kafka version: $KAFKA_VERSION (from $POM).
EOF
}

main() {
  local cmd="${1:-help}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    fetch) cmd_fetch "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    bootstrap) cmd_bootstrap "$@" ;;
    logs) cmd_logs "$@" ;;
    reset) cmd_reset "$@" ;;
    help | -h | --help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
