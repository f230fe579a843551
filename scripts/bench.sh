#!/usr/bin/env bash
# Benchmark rig of shared/PERFORMANCE.md: Fleetgate's data plane against nginx, HAProxy, Caddy and Go's
# httputil.ReverseProxy, all in front of the same small Go origin. Every table is measured side by side
# in one run and reported with Fleetgate's ratio to each peer.
#
# Layout (2 cores):
#   core PROXY_CPU (0): the proxy under test, one worker (nginx worker_processes 1, haproxy nbthread 1,
#                        Go programs GOMAXPROCS=1)
#   core LOAD_CPU  (1): the load generator (wrk -t1 -c64, h2load -t1, holdconns) and the origin
#                        (GOMAXPROCS=1); the control plane too (idle, and run with --insecure: its TLS is
#                        no part of the proxy path measured here)
# Every target is started once, with the listeners of every selected benchmark, and stays up; they are
# measured one at a time, round-robin within each round (the starting target rotates per round), so
# drift hits all of them alike.
#
# Benchmarks (BENCH, comma- or space-separated, default all, in this order):
#   basic      a Basic rule to one origin, HTTP/1.1 keep-alive (wrk): every target in TARGETS
#   memory     each proxy's RSS (and PSS) idle after start, then holding MEM_CONNS idle keep-alive client
#              connections, each after one request (scripts/bench/holdconns): every proxy in TARGETS;
#              with https selected too, again over HTTPS, and with h2 selected, over HTTP/2 (ALPN h2),
#              for nginx, HAProxy and Fleetgate (BENCH=memory,h2 for HTTP/2 on proxies that have not
#              held the HTTPS pass's connections before: nginx and HAProxy keep that memory)
#   affinity   cookie affinity, a returning client: the pool has two servers (the origin on NET.1
#              and NET.7) and every request carries the affinity cookie the proxy issued.
#              Fleetgate cookieBasedAffinity Enabled (an HMAC cookie checked per request); HAProxy
#              `cookie SRV insert indirect nocache`; nginx OSS has no sticky cookie, so `hash
#              $cookie_srv consistent` (it routes on the client's cookie but never issues one)
#   rules      a URL path map of RULES (100) prefix rules, each to its own backend, the requests
#              taking rule RULE_HIT (50): Fleetgate urlPathMaps, nginx `location /rN/` blocks,
#              HAProxy `use_backend rN if { path_beg /rN/ }` ACLs in order
#   https      an HTTPS listener (TLS 1.3, ECDSA P-256, session resumption on), HTTP/1.1 keep-alive
#              (wrk: handshakes amortised), plus the `handshake` run: a new TLS connection per request
#              (wrk -H 'Connection: close'; BENCH=handshake selects it alone)
#   h2         HTTP/2 over TLS (ALPN h2) on that listener: h2load -t1 -c H2_CONNS -m H2_STREAMS
#   paired     Fleetgate and one peer (nginx, HAProxy) loaded at the same time, both pinned to
#              core PROXY_CPU, each by its own load generator on core LOAD_CPU: the CPU time a request
#              of each (PAIRED_CASES, 64 B). Both share every disturbance of the machine, so the
#              ratio of a round holds steady where single runs vary by tens of percent
#   routing    dataplane/route's Go benchmarks (path rules and host names, 10 / 1,000 / 10,000), ns/op
# affinity, rules, https, handshake and h2 compare Fleetgate with nginx and HAProxy (those in TARGETS).
#
# Usage: scripts/bench.sh [--quick] [--keep-tmp]
#   --quick      DURATION=2 ROUNDS=1, shorter routing benchmarks (smoke test)
#   --keep-tmp   keep the temp dir (configs, logs, raw wrk/h2load output)
# Environment knobs:
#   BENCH      benchmarks to run, e.g. BENCH=basic,h2 (default: all of the above)
#   DURATION   seconds per measured run (default 6)
#   ROUNDS     rounds (default 3)
#   SIZES      body sizes, origin paths (default "64 16k") of basic, https and h2; SIZES_<BENCH>
#              overrides one benchmark's (SIZES_AFFINITY, SIZES_RULES, SIZES_HANDSHAKE default "64":
#              their extra cost is per request, not per byte)
#   TARGETS    subset/order of: noproxy nginx haproxy caddy goproxy fleetgate (default all)
#   WARMUP     warm-up seconds before each measured run (default 1)
#   CONNS      wrk connections (default 64)
#   H2_CONNS / H2_STREAMS   h2load connections and concurrent streams per connection (default 16 / 4:
#              64 requests in flight, as wrk's 64 connections)
#   PAIRED_CASES  the load benchmarks paired runs (default "basic https h2"; of basic affinity rules
#              https h2)
#   RULES / RULE_HIT   path-map size and the rule the requests take (default 100 / 50)
#   MEM_CONNS  connections held in the memory benchmark (default 10000); MEM_SETTLE seconds to wait
#              with them open before reading RSS (default 2)
#   ROUTING_BENCHTIME / ROUTING_COUNT   go test -benchtime / -count of the routing benchmarks
#              (default 500ms / 3, median reported)
#   IDLE_MAX / WAIT_IDLE   before each run, wait up to WAIT_IDLE s (default 20) until no core is more than
#              IDLE_MAX % busy (default 10) with the rig idle; the same check runs after each run
#   RETRIES    a run with other load before or after it is measured again, up to RETRIES times
#              (default 2); if still noisy it is kept and flagged ⚠ in the report
#   PROXY_CPU / LOAD_CPU   cores (default 0 / 1)
#   SKIP_BUILD=1  use the binaries already in bin/ (make bench has just built them)
#   FLEETGATE_FLAGS  more flags for the data-plane worker, e.g. "--pprof-address 127.0.0.1:16060"
#   OUT=FILE   also write the markdown report to FILE
#   NET        the loopback /24 every address is in (default 127.0.0: 127.0.0.1 origin, .2 Fleetgate,
#              .3 nginx, .4 HAProxy, .5 Caddy, .6 Go ReverseProxy, .7 second origin address, .101-.104
#              holdconns' sources); another, e.g. NET=127.0.3, runs beside a rig holding those
# The full default run takes about 15 minutes. Only loopback addresses (NET.x, 127.0.0.x by default) and high ports
# are used; see the address table below.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

KEEP_TMP=${KEEP_TMP:-0}
QUICK=0
for arg in "$@"; do
	case "$arg" in
	--quick) QUICK=1 ;;
	--keep-tmp) KEEP_TMP=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "bench: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
	esac
done
if [[ $QUICK == 1 ]]; then
	DURATION=2
	ROUNDS=1
	ROUTING_BENCHTIME=${ROUTING_BENCHTIME:-100ms}
	ROUTING_COUNT=${ROUTING_COUNT:-1}
fi
BENCH=${BENCH:-"basic memory affinity rules https h2 paired routing"}
DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"64 16k"}
TARGETS=${TARGETS:-"noproxy nginx haproxy caddy goproxy fleetgate"}
WARMUP=${WARMUP:-1}
IDLE_MAX=${IDLE_MAX:-10}
WAIT_IDLE=${WAIT_IDLE:-20}
RETRIES=${RETRIES:-2}
CONNS=${CONNS:-64}
H2_CONNS=${H2_CONNS:-16}
H2_STREAMS=${H2_STREAMS:-4}
PAIRED_CASES=${PAIRED_CASES:-"basic https h2"}
RULES=${RULES:-100}
RULE_HIT=${RULE_HIT:-50}
MEM_CONNS=${MEM_CONNS:-10000}
MEM_SETTLE=${MEM_SETTLE:-2}
ROUTING_BENCHTIME=${ROUTING_BENCHTIME:-500ms}
ROUTING_COUNT=${ROUTING_COUNT:-3}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-}
NET=${NET:-127.0.0}
FLEETGATE_FLAGS=${FLEETGATE_FLAGS:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

# ---- benchmarks ----
# Load benchmarks ("cases"), in report order; memory and routing are not cases.
ALL_CASES=(basic affinity rules https handshake h2)
declare -A CASE_SIZES=(
	[basic]=${SIZES_BASIC:-$SIZES}
	[affinity]=${SIZES_AFFINITY:-64}
	[rules]=${SIZES_RULES:-64}
	[https]=${SIZES_HTTPS:-$SIZES}
	[handshake]=${SIZES_HANDSHAKE:-64}
	[h2]=${SIZES_H2:-$SIZES}
)
declare -A SELECTED=()
for b in ${BENCH//,/ }; do
	case "$b" in
	basic | affinity | rules | handshake | h2 | memory | paired | routing) SELECTED[$b]=1 ;;
	https) SELECTED[https]=1 SELECTED[handshake]=1 ;;
	all) for c in "${ALL_CASES[@]}" memory paired routing; do SELECTED[$c]=1; done ;;
	*) echo "bench: unknown benchmark '$b' in BENCH (know: basic memory affinity rules https handshake h2 paired routing)" >&2; exit 2 ;;
	esac
done
selected() { [[ -n ${SELECTED[$1]:-} ]]; }
CASES=()
for c in "${ALL_CASES[@]}"; do selected "$c" && CASES+=("$c"); done
for c in $PAIRED_CASES; do
	case "$c" in
	basic | affinity | rules | https | h2) ;;
	*) echo "bench: PAIRED_CASES: '$c' is not one of basic affinity rules https h2" >&2; exit 2 ;;
	esac
done
# paired CASE: CASE is among the paired runs (which need its listeners).
paired() { selected paired && [[ " $PAIRED_CASES " == *" $1 "* ]]; }
need_tls() { selected https || selected handshake || selected h2 || paired https || paired h2; }
need_h2load() { selected h2 || paired h2; }
# with CASE: the case's listeners are needed (measured, or paired).
with() { selected "$1" || paired "$1"; }

# ---- addresses (loopback only) ----
[[ $NET =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || { echo "bench: NET=$NET is not a loopback /24 prefix such as 127.0.0" >&2; exit 2; }
ORIGIN_ADDR=$NET.1:19000
ORIGIN_ADDR2=$NET.7:19000 # the same origin process: the affinity pool's second server
CP_ADDR=$NET.1:17070
ETCD_CLIENT=$NET.1:17379
ETCD_PEER=$NET.1:17380
declare -A ADDR=( # the basic listener of each target; other benchmarks use the same IP, their own port
	[noproxy]=$ORIGIN_ADDR
	[fleetgate]=$NET.2:18080
	[nginx]=$NET.3:18081
	[haproxy]=$NET.4:18082
	[caddy]=$NET.5:18083
	[goproxy]=$NET.6:18084
)
AFF_PORT=18180
RULES_PORT=18280
TLS_PORT=18443
TLS_NAME=bench.fleetgate.test
MEM_SOURCES=$NET.101,$NET.102,$NET.103,$NET.104 # holdconns' source addresses
declare -A LABEL=(
	[noproxy]="no proxy (origin direct)"
	[fleetgate]="fleetgate data plane"
	[nginx]="nginx"
	[haproxy]="haproxy"
	[caddy]="caddy"
	[goproxy]="go httputil.ReverseProxy"
)
declare -A SHORT=([noproxy]=no-proxy [fleetgate]=fleetgate [nginx]=nginx [haproxy]=haproxy [caddy]=caddy [goproxy]=go-reverseproxy)

read -r -a TARGET_LIST <<<"$TARGETS"
for t in "${TARGET_LIST[@]}"; do
	[[ -n ${ADDR[$t]:-} ]] || { echo "bench: unknown target '$t' (know: ${!ADDR[*]})" >&2; exit 2; }
done
has_target() { [[ " $TARGETS " == *" $1 "* ]]; }
# PEERS: the targets of the benchmarks beyond basic, in TARGETS order.
PEERS=()
for t in "${TARGET_LIST[@]}"; do [[ $t == nginx || $t == haproxy || $t == fleetgate ]] && PEERS+=("$t"); done
# PROXIES: the targets of the memory benchmark.
PROXIES=()
for t in "${TARGET_LIST[@]}"; do [[ $t == noproxy ]] || PROXIES+=("$t"); done
# RUN_LIST: the targets started.
RUN_LIST=()
if selected basic || selected memory; then
	RUN_LIST=("${TARGET_LIST[@]}")
elif ((${#CASES[@]})) || selected paired; then
	RUN_LIST=("${PEERS[@]}")
fi
running() { [[ " ${RUN_LIST[*]} " == *" $1 "* ]]; }
# case_targets CASE: the targets a load benchmark measures.
case_targets() {
	if [[ $1 == basic ]]; then echo "${TARGET_LIST[*]}"; else echo "${PEERS[*]}"; fi
}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- tools ----
ensure_tools() {
	local -A pkg_of=([nginx]=nginx [haproxy]=haproxy [caddy]=caddy [wrk]=wrk [taskset]=util-linux [curl]=curl [ss]=iproute2
		[openssl]=openssl [h2load]=nghttp2-client)
	local need=(taskset curl ss) missing=() c
	running nginx && need+=(nginx)
	running haproxy && need+=(haproxy)
	running caddy && need+=(caddy)
	((${#CASES[@]})) || selected paired && need+=(wrk)
	need_tls && need+=(openssl)
	need_h2load && need+=(h2load)
	for c in "${need[@]}"; do
		command -v "$c" >/dev/null 2>&1 || missing+=("${pkg_of[$c]}")
	done
	command -v go >/dev/null 2>&1 || die "go is not on PATH"
	((${#missing[@]} == 0)) && return 0
	log "installing missing packages: ${missing[*]}"
	local sudo=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install ${missing[*]}"
		sudo=(sudo)
	fi
	"${sudo[@]}" apt-get update
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y "${missing[@]}"
	for c in "${need[@]}"; do
		command -v "$c" >/dev/null 2>&1 || die "$c still missing after apt-get install"
	done
}
ensure_tools

ncpu=$(nproc)
((ncpu >= 2)) || log "warning: only $ncpu core(s); proxy and load generator will share a core"
((PROXY_CPU < ncpu && LOAD_CPU < ncpu)) || die "PROXY_CPU=$PROXY_CPU / LOAD_CPU=$LOAD_CPU: this machine has $ncpu core(s)"

# Open files: every process started here inherits the soft limit, raised as far as the hard limit
# allows (the memory benchmark holds MEM_CONNS client connections in holdconns and in each proxy).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ $NOFILE == unlimited ]] && NOFILE=1048576
MEM_NOTE=
HAPROXY_NOTE=
if selected memory && ((MEM_CONNS + 1024 > NOFILE)); then
	MEM_NOTE="MEM_CONNS lowered from $MEM_CONNS to $((NOFILE - 1024)): the open-files limit is $NOFILE (ulimit -Hn)"
	log "warning: $MEM_NOTE"
	MEM_CONNS=$((NOFILE - 1024))
fi
# Connection capacity configured into each proxy: enough for the memory benchmark when it runs.
if selected memory; then MAXCONN=$((MEM_CONNS + 2048)); else MAXCONN=4096; fi
((MAXCONN > NOFILE - 64)) && MAXCONN=$((NOFILE - 64))

# ---- temp dir and process bookkeeping ----
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fleetgate-bench.XXXXXX")
chmod 755 "$TMP" # nginx workers (user nobody) must reach their temp dirs
PIDS=()
declare -A PNAME=() PLOG=() TPID=() # TPID: target -> pid of the process serving it

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local i pid n
	[[ -n ${LOAD_PID:-} ]] && kill -TERM "$LOAD_PID" 2>/dev/null
	[[ -n ${HOLD_PID:-} ]] && kill -TERM "$HOLD_PID" 2>/dev/null
	[[ -n ${PAIR_PID:-} ]] && { pkill -TERM -P "$PAIR_PID" 2>/dev/null; kill -TERM "$PAIR_PID" 2>/dev/null; }
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		pid=${PIDS[i]}
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for ((n = 0; n < 50; n++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "${PNAME[$pid]} (pid $pid) did not stop on SIGTERM; killing"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
	if [[ $KEEP_TMP == 1 ]]; then
		log "kept $TMP"
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# start NAME CPU [ENV=V ...] -- CMD ARGS...: runs CMD pinned to CPU in the background, output to a log;
# sets STARTED_PID (not echoed: a command substitution would run it in a subshell).
start() {
	local name=$1 cpu=$2
	shift 2
	local envs=()
	while [[ $1 != -- ]]; do envs+=("$1"); shift; done
	shift
	local logf=$TMP/$name.log
	env "${envs[@]}" taskset -c "$cpu" "$@" >"$logf" 2>&1 </dev/null &
	local pid=$!
	PIDS+=("$pid")
	PNAME[$pid]=$name
	PLOG[$name]=$logf
	STARTED_PID=$pid
}

fail_with_log() { # NAME MESSAGE
	local name=$1 msg=$2
	printf '[bench] ERROR: %s failed to start: %s\n' "$name" "$msg" >&2
	if [[ -f ${PLOG[$name]:-/nonexistent} ]]; then
		printf -- '----- %s (last 60 lines) -----\n' "${PLOG[$name]}" >&2
		tail -n 60 "${PLOG[$name]}" >&2 || true
		printf -- '-----\n' >&2
	fi
	exit 1
}

# wait_http NAME PID URL [TIMEOUT_S]: waits until URL answers 200 while PID stays alive.
wait_http() {
	local name=$1 pid=$2 url=$3 timeout=${4:-20} code deadline=$((SECONDS + ${4:-20}))
	while :; do
		kill -0 "$pid" 2>/dev/null || fail_with_log "$name" "process exited"
		code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)
		[[ $code == 200 ]] && return 0
		((SECONDS < deadline)) || fail_with_log "$name" "$url did not answer 200 within ${timeout}s (last status: ${code:-none})"
		sleep 0.2
	done
}

port_free() { # HOST:PORT: nothing listens on it, nor on the port of every address
	local a
	for a in $(ss -Hltn "( sport = :${1##*:} )" 2>/dev/null | awk '{print $4}'); do
		case "$a" in
		"$1" | "0.0.0.0:${1##*:}" | "*:${1##*:}" | "[::]:${1##*:}") return 1 ;;
		esac
	done
}

size_bytes() { # 64 -> 64, 16k -> 16384, 1m -> 1048576
	local s=$1
	case "$s" in
	*[kK]) echo $((${s%?} * 1024)) ;;
	*[mM]) echo $((${s%?} * 1024 * 1024)) ;;
	*) echo "$s" ;;
	esac
}

ip_of() { local a=${ADDR[$1]}; echo "${a%:*}"; }

# url CASE TARGET SIZE: what a load benchmark requests.
url() {
	local c=$1 t=$2 s=$3
	case "$c" in
	basic) echo "http://${ADDR[$t]}/$s" ;;
	affinity) echo "http://$(ip_of "$t"):$AFF_PORT/$s" ;;
	rules) echo "http://$(ip_of "$t"):$RULES_PORT/r$RULE_HIT/$s" ;;
	https | handshake | h2) echo "https://$(ip_of "$t"):$TLS_PORT/$s" ;;
	esac
}

# ---- build ----
BIN=$ROOT/bin
if ((${#RUN_LIST[@]})); then
	if [[ $SKIP_BUILD != 1 ]] || [[ ! -x $BIN/dataplane ]]; then
		log "building bin/controlplane bin/gatewayctl bin/dataplane"
		go build -o "$BIN/" ./controlplane/cmd/controlplane ./controlplane/cmd/gatewayctl ./dataplane/cmd/dataplane
	fi
	log "building the origin, the ReverseProxy baseline and holdconns"
	go build -o "$TMP/bin/" ./scripts/bench/origin ./scripts/bench/reverseproxy ./scripts/bench/holdconns
fi
if selected routing; then
	log "building dataplane/route's test binary"
	go test -c -o "$TMP/bin/route.test" ./dataplane/route/
fi

# ---- ports must be free ----
need_ports=()
if ((${#RUN_LIST[@]})); then
	need_ports+=("$ORIGIN_ADDR")
	for t in "${RUN_LIST[@]}"; do [[ $t == noproxy ]] || need_ports+=("${ADDR[$t]}"); done
	running fleetgate && need_ports+=("$CP_ADDR" "$ETCD_CLIENT" "$ETCD_PEER")
	with affinity && need_ports+=("$ORIGIN_ADDR2")
	for t in "${PEERS[@]}"; do
		with affinity && need_ports+=("$(ip_of "$t"):$AFF_PORT")
		with rules && need_ports+=("$(ip_of "$t"):$RULES_PORT")
		need_tls && need_ports+=("$(ip_of "$t"):$TLS_PORT")
	done
fi
for a in "${need_ports[@]}"; do
	port_free "$a" || die "port ${a##*:} is already in use (needed for $a); stop whatever holds it"
done

# ---- TLS material: one ECDSA P-256 certificate for every proxy ----
TLS_DIR=$TMP/tls
if need_tls && ((${#RUN_LIST[@]})); then
	mkdir -p "$TLS_DIR"
	san="DNS:$TLS_NAME"
	for t in "${PEERS[@]}"; do san+=",IP:$(ip_of "$t")"; done
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
		-keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" -subj "/CN=$TLS_NAME" -addext "subjectAltName=$san" \
		>"$TLS_DIR/openssl.log" 2>&1 || { cat "$TLS_DIR/openssl.log" >&2; die "openssl req failed"; }
	cat "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >"$TLS_DIR/combined.pem"
	chmod 644 "$TLS_DIR"/*.pem
fi

# ---- origin ----
if ((${#RUN_LIST[@]})); then
	origin_listen=$ORIGIN_ADDR
	with affinity && origin_listen+=",$ORIGIN_ADDR2"
	start origin "$LOAD_CPU" GOMAXPROCS=1 -- "$TMP/bin/origin" --listen "$origin_listen"
	pid=$STARTED_PID
	wait_http origin "$pid" "http://$ORIGIN_ADDR/64"
	TPID[noproxy]=$pid
fi

# ---- peers ----
start_nginx() {
	local d=$TMP/nginx ip a=${ADDR[nginx]} i
	ip=$(ip_of nginx)
	mkdir -p "$d/tmp"
	chmod 777 "$d/tmp"
	{
		cat <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections $MAXCONN; }
http {
    access_log off;
    client_body_temp_path $d/tmp/client;
    proxy_temp_path       $d/tmp/proxy;
    fastcgi_temp_path     $d/tmp/fastcgi;
    uwsgi_temp_path       $d/tmp/uwsgi;
    scgi_temp_path        $d/tmp/scgi;
    # No per-connection request cap (HTTP/1.1 and, since 1.19.7, HTTP/2): the other proxies have none.
    keepalive_requests 1000000;
    keepalive_timeout  120s;
    upstream origin {
        server $ORIGIN_ADDR;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout  120s;
    }
    server {
        listen $a;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
EOF
		if with affinity; then
			cat <<EOF
    # nginx OSS has no sticky cookie: route on the client's cookie (it never issues one).
    upstream pair {
        hash \$cookie_srv consistent;
        server $ORIGIN_ADDR;
        server $ORIGIN_ADDR2;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout  120s;
    }
    server {
        listen $ip:$AFF_PORT;
        location / {
            proxy_pass http://pair;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
EOF
		fi
		if with rules; then
			for ((i = 1; i <= RULES; i++)); do
				printf '    upstream r%d { server %s; keepalive 64; keepalive_requests 1000000; keepalive_timeout 120s; }\n' "$i" "$ORIGIN_ADDR"
			done
			printf '    server {\n        listen %s:%s;\n        proxy_http_version 1.1;\n        proxy_set_header Connection "";\n' "$ip" "$RULES_PORT"
			for ((i = 1; i <= RULES; i++)); do
				printf '        location /r%d/ { proxy_pass http://r%d; }\n' "$i" "$i"
			done
			printf '        location / { proxy_pass http://origin; }\n    }\n'
		fi
		if need_tls; then
			cat <<EOF
    server {
        listen $ip:$TLS_PORT ssl http2;
        ssl_certificate     $TLS_DIR/cert.pem;
        ssl_certificate_key $TLS_DIR/key.pem;
        ssl_protocols       TLSv1.3;
        ssl_session_cache   shared:SSL:10m;
        ssl_session_tickets on;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
EOF
		fi
		echo "}"
	} >"$d/nginx.conf"
	local pid
	start nginx "$PROXY_CPU" -- nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
	pid=$STARTED_PID
	wait_http nginx "$pid" "http://$a/64"
	TPID[nginx]=$pid
	PLOG[nginx]=$d/error.log
}

start_haproxy() {
	local d=$TMP/haproxy ip a=${ADDR[haproxy]} i limits=""
	ip=$(ip_of haproxy)
	mkdir -p "$d"
	# HAProxy reserves two descriptors per connection (client and server side); the memory benchmark's
	# idle clients need one each, so let it start below that reserve rather than refuse to.
	if ((2 * MAXCONN + 100 > NOFILE)); then
		limits=$'\n'"    ulimit-n $NOFILE"$'\n'"    no strict-limits"
		HAPROXY_NOTE="HAProxy ran with \`maxconn $MAXCONN\`, \`ulimit-n $NOFILE\` and \`no strict-limits\`: it reserves two descriptors per connection (client and server side), more than the open-files limit ($NOFILE) allows, and refuses to start otherwise."
	fi
	{
		cat <<EOF
global
    nbthread 1
    maxconn $MAXCONN$limits

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend fe
    bind $a
    default_backend be

backend be
    server origin $ORIGIN_ADDR
EOF
		if with affinity; then
			cat <<EOF

frontend fe_affinity
    bind $ip:$AFF_PORT
    default_backend be_pair

backend be_pair
    balance roundrobin
    cookie SRV insert indirect nocache
    server s1 $ORIGIN_ADDR cookie s1
    server s2 $ORIGIN_ADDR2 cookie s2
EOF
		fi
		if with rules; then
			printf '\nfrontend fe_rules\n    bind %s:%s\n' "$ip" "$RULES_PORT"
			for ((i = 1; i <= RULES; i++)); do
				printf '    use_backend r%d if { path_beg /r%d/ }\n' "$i" "$i"
			done
			printf '    default_backend be\n'
			for ((i = 1; i <= RULES; i++)); do
				printf '\nbackend r%d\n    server origin %s\n' "$i" "$ORIGIN_ADDR"
			done
		fi
		if need_tls; then
			cat <<EOF

frontend fe_tls
    bind $ip:$TLS_PORT ssl crt $TLS_DIR/combined.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3
    default_backend be
EOF
		fi
	} >"$d/haproxy.cfg"
	haproxy -c -q -f "$d/haproxy.cfg" >"$d/check.log" 2>&1 || { cat "$d/check.log" >&2; die "haproxy config check failed"; }
	local pid
	start haproxy "$PROXY_CPU" -- haproxy -db -f "$d/haproxy.cfg"
	pid=$STARTED_PID
	wait_http haproxy "$pid" "http://$a/64"
	TPID[haproxy]=$pid
}

start_caddy() {
	local d=$TMP/caddy a=${ADDR[caddy]}
	mkdir -p "$d/data" "$d/config" "$d/home"
	cat >"$d/Caddyfile" <<EOF
{
	admin off
	auto_https off
	log {
		level ERROR
	}
}

http://$a {
	bind ${a%:*}
	reverse_proxy $ORIGIN_ADDR {
		transport http {
			keepalive 120s
			keepalive_idle_conns_per_host 256
		}
	}
}
EOF
	local pid
	start caddy "$PROXY_CPU" GOMAXPROCS=1 HOME="$d/home" XDG_DATA_HOME="$d/data" XDG_CONFIG_HOME="$d/config" -- \
		caddy run --adapter caddyfile --config "$d/Caddyfile"
	pid=$STARTED_PID
	wait_http caddy "$pid" "http://$a/64"
	TPID[caddy]=$pid
}

start_goproxy() {
	local a=${ADDR[goproxy]} pid
	start goproxy "$PROXY_CPU" GOMAXPROCS=1 -- "$TMP/bin/reverseproxy" --listen "$a" --upstream "http://$ORIGIN_ADDR"
	pid=$STARTED_PID
	wait_http goproxy "$pid" "http://$a/64"
	TPID[goproxy]=$pid
}

start_fleetgate() {
	local d=$TMP/fleetgate a=${ADDR[fleetgate]} i prio=1
	mkdir -p "$d/cp" "$d/dp"
	{
		echo "name: bench"
		# 0 (the default) already means no limit; the memory benchmark's connections are spelled out.
		echo "limits: {maxConnectionsPerListener: $((MAXCONN > 1000000 ? 1000000 : MAXCONN))}"
		need_tls && echo "sslCertificates: [{name: bench, certFile: $TLS_DIR/cert.pem, keyFile: $TLS_DIR/key.pem}]"
		echo "httpListeners:"
		echo "  - {name: web, port: ${a##*:}}"
		with affinity && echo "  - {name: affinity, port: $AFF_PORT}"
		with rules && echo "  - {name: rules, port: $RULES_PORT}"
		need_tls && echo "  - {name: tls, port: $TLS_PORT, protocol: Https, sslCertificate: bench}"
		echo "backendAddressPools:"
		echo "  - {name: origin, backendAddresses: [{ipAddress: ${ORIGIN_ADDR%:*}}]}"
		with affinity && echo "  - {name: pair, backendAddresses: [{ipAddress: ${ORIGIN_ADDR%:*}}, {ipAddress: ${ORIGIN_ADDR2%:*}}]}"
		if with rules; then
			for ((i = 1; i <= RULES; i++)); do echo "  - {name: r$i, backendAddresses: [{ipAddress: ${ORIGIN_ADDR%:*}}]}"; done
		fi
		echo "backendHttpSettingsCollection:"
		echo "  - {name: s, port: ${ORIGIN_ADDR##*:}, requestTimeout: 20}"
		with affinity && echo "  - {name: sticky, port: ${ORIGIN_ADDR##*:}, requestTimeout: 20, cookieBasedAffinity: Enabled}"
		if with rules; then
			echo "urlPathMaps:"
			echo "  - name: m"
			echo "    defaultBackendAddressPool: origin"
			echo "    defaultBackendHttpSettings: s"
			echo "    pathRules:"
			for ((i = 1; i <= RULES; i++)); do
				echo "      - {name: r$i, paths: [\"/r$i/*\"], backendAddressPool: r$i, backendHttpSettings: s}"
			done
		fi
		echo "requestRoutingRules:"
		echo "  - {name: r, ruleType: Basic, priority: $((prio++)), httpListener: web, backendAddressPool: origin, backendHttpSettings: s}"
		with affinity && echo "  - {name: r-affinity, ruleType: Basic, priority: $((prio++)), httpListener: affinity, backendAddressPool: pair, backendHttpSettings: sticky}"
		with rules && echo "  - {name: r-rules, ruleType: PathBasedRouting, priority: $((prio++)), httpListener: rules, urlPathMap: m}"
		need_tls && echo "  - {name: r-tls, ruleType: Basic, priority: $((prio++)), httpListener: tls, backendAddressPool: origin, backendHttpSettings: s}"
	} >"$d/gateway.yaml"
	local cppid
	# The control plane (and its embedded etcd) idles during the runs; keep it off the proxy core.
	# --insecure here and on gatewayctl and the data plane: this benchmarks the proxy path (plain
	# HTTP, which the control plane's TLS never touches), so the control connection runs in plaintext
	# and the costs of TLS to the control plane are not measured here (scripts/bench-controlplane.sh
	# --tls measures them on the control plane's side).
	start controlplane "$LOAD_CPU" -- "$BIN/controlplane" --insecure --listen "$CP_ADDR" --data-dir "$d/cp/etcd" \
		--etcd-client-addr "$ETCD_CLIENT" --etcd-peer-addr "$ETCD_PEER" --replica bench --log-level warn
	cppid=$STARTED_PID
	local deadline=$((SECONDS + 40)) out
	until out=$("$BIN/gatewayctl" --insecure --server "$CP_ADDR" --timeout 3s apply -f "$d/gateway.yaml" 2>&1); do
		kill -0 "$cppid" 2>/dev/null || fail_with_log controlplane "process exited"
		if ((SECONDS >= deadline)); then
			printf '%s\n' "$out" >&2
			fail_with_log controlplane "gatewayctl apply did not succeed within 40s"
		fi
		sleep 0.5
	done
	log "applied gateway 'bench': $out"
	local pid
	start dataplane "$PROXY_CPU" GOMAXPROCS=1 -- "$BIN/dataplane" --insecure --controlplane "$CP_ADDR" --gateway bench \
		--id dp-bench --bind-address "${a%:*}" --state-dir "$d/dp" --shutdown-grace 1s $FLEETGATE_FLAGS
	pid=$STARTED_PID
	wait_http dataplane "$pid" "http://$a/64" 30
	TPID[fleetgate]=$pid
}

for t in "${RUN_LIST[@]}"; do
	case "$t" in
	noproxy) ;;
	nginx) log "starting nginx on $(ip_of nginx)"; start_nginx ;;
	haproxy) log "starting haproxy on $(ip_of haproxy)"; start_haproxy ;;
	caddy) log "starting caddy on ${ADDR[caddy]}"; start_caddy ;;
	goproxy) log "starting go ReverseProxy on ${ADDR[goproxy]}"; start_goproxy ;;
	fleetgate) log "starting fleetgate (control plane $CP_ADDR, data plane $(ip_of fleetgate))"; start_fleetgate ;;
	esac
done

# ---- checks: every target answers every benchmark's requests in full before anything is measured ----
declare -A COOKIE=() REISSUE=() TLSINFO=()
# affinity_cookie TARGET: the affinity cookie a returning client sends (NAME=VALUE).
affinity_cookie() {
	local t=$1 name
	case "$t" in
	nginx) echo "srv=bench-client"; return ;;
	haproxy) name=SRV ;;
	fleetgate) name=ApplicationGatewayAffinity ;;
	esac
	# awk reads to the end: a reader quitting early would fail the pipeline (pipefail) on SIGPIPE.
	curl -s --max-time 5 -D - -o /dev/null "$(url affinity "$t" 64)" | tr -d '\r' |
		awk -v n="$name" 'tolower($1) == "set-cookie:" && index($2, n "=") == 1 && !c { c = $2; sub(/;.*/, "", c) } END { print c }'
}
# tls_info TARGET: "TLSv1.3 TLS_AES_256_GCM_SHA384, resumed" from two openssl s_client connections,
# the second offering the session (ticket) the first received.
tls_info() {
	local t=$1 sess=$TMP/tls.$1.sess out1 out2 req
	req=$'GET /64 HTTP/1.1\r\nHost: '"$TLS_NAME"$'\r\nConnection: close\r\n\r\n'
	out1=$(printf '%s' "$req" | timeout 5 openssl s_client -connect "$(ip_of "$t"):$TLS_PORT" -servername "$TLS_NAME" \
		-sess_out "$sess" -ign_eof 2>/dev/null || true)
	out2=$(printf '%s' "$req" | timeout 5 openssl s_client -connect "$(ip_of "$t"):$TLS_PORT" -servername "$TLS_NAME" \
		-sess_in "$sess" -ign_eof 2>/dev/null || true)
	local proto cipher reused
	proto=$(sed -n '/^ *Protocol *: */{s///p;q}' <<<"$out1")
	cipher=$(sed -n '/^New, [^,]*, Cipher is /{s///p;q}' <<<"$out1")
	if grep -q '^Reused,' <<<"$out2"; then reused="session resumed"; else reused="session NOT resumed"; fi
	echo "${proto:-?} ${cipher:-?}, $reused"
}
# CHECK_CASES: the load benchmarks whose listeners are checked: those measured, and those paired.
CHECK_CASES=()
for c in "${ALL_CASES[@]}"; do with "$c" && CHECK_CASES+=("$c"); done
if ((${#RUN_LIST[@]})); then
	for c in "${CHECK_CASES[@]}"; do
		read -r -a tl <<<"$(case_targets "$c")"
		for t in "${tl[@]}"; do
			if [[ $c == affinity ]]; then
				COOKIE[$t]=$(affinity_cookie "$t")
				[[ -n ${COOKIE[$t]} ]] || die "$t: no affinity cookie issued by $(url affinity "$t" 64)"
				# Does the proxy issue the cookie again to a client that sends a valid one?
				n=$(curl -s --max-time 5 -D - -o /dev/null -H "Cookie: ${COOKIE[$t]}" "$(url affinity "$t" 64)" | grep -ci '^set-cookie:' || true)
				REISSUE[$t]=$n
			fi
			if [[ $c == https ]]; then TLSINFO[$t]=$(tls_info "$t"); fi
			for s in ${CASE_SIZES[$c]}; do
				want=$(size_bytes "$s")
				u=$(url "$c" "$t" "$s")
				if [[ $c == h2 ]]; then
					out=$(taskset -c "$LOAD_CPU" h2load -n 1 -c 1 "$u" 2>&1 || true)
					if ! grep -q '^Application protocol: h2' <<<"$out" || ! grep -q '1 succeeded' <<<"$out"; then
						printf '%s\n' "$out" >&2
						die "$t: h2 GET $u failed"
					fi
					continue
				fi
				hdr=()
				[[ $c == affinity ]] && hdr=(-H "Cookie: ${COOKIE[$t]}")
				got=$(curl -sk --max-time 5 "${hdr[@]}" "$u" | wc -c)
				[[ $got == "$want" ]] || die "$t: GET $u returned $got bytes, want $want"
			done
		done
	done
	# The memory benchmark's request goes to the basic listener.
	if selected memory; then
		for t in "${PROXIES[@]}"; do
			got=$(curl -s --max-time 5 "http://${ADDR[$t]}/64" | wc -c)
			[[ $got == 64 ]] || die "$t: GET http://${ADDR[$t]}/64 returned $got bytes, want 64"
		done
	fi
	log "all targets up: ${RUN_LIST[*]}"
fi

# ---- machinery of the measurements ----
# run_load OUTFILE CMD ARGS...: a load generator on the load core. Run in the background and waited
# for, so that a signal to this script is handled at once (bash defers traps while a foreground
# command runs).
LOAD_PID=
run_load() {
	local out=$1 rc=0
	shift
	taskset -c "$LOAD_CPU" "$@" >"$out" 2>&1 </dev/null &
	LOAD_PID=$!
	wait "$LOAD_PID" || rc=$?
	LOAD_PID=
	return "$rc"
}
# cpu_snap N: "busy total" jiffies of core N from /proc/stat (busy: user nice system irq softirq).
cpu_snap() { awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
# tree PID: PID and its direct children (nginx's worker).
tree() {
	local kids
	kids=$(pgrep -P "$1" 2>/dev/null || true)
	echo "$1" "${kids//$'\n'/ }"
}
# proc_ticks PID: user+system clock ticks of PID and its direct children.
proc_ticks() {
	local p sum=0 t
	for p in $(tree "$1"); do
		t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)
		sum=$((sum + t))
	done
	echo "$sum"
}
# rss_kib PID: resident set of PID and its direct children, KiB.
rss_kib() {
	local p sum=0 r
	for p in $(tree "$1"); do
		r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
		sum=$((sum + ${r:-0}))
	done
	echo "$sum"
}
# pss_kib PID: proportional set size of PID and its direct children, KiB: pages shared between them
# (nginx's master and worker: code, shared memory zones) counted once; empty without smaps_rollup.
pss_kib() {
	local p sum=0 r
	for p in $(tree "$1"); do
		r=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
		[[ -n $r ]] || return 0
		sum=$((sum + r))
	done
	echo "$sum"
}
CLK_TCK=$(getconf CLK_TCK)
# machine_busy: highest busy percent of the two cores over 0.3 s (the rig itself idles meanwhile).
machine_busy() {
	local a0 a1 b0 b1
	a0=$(cpu_snap "$PROXY_CPU") a1=$(cpu_snap "$LOAD_CPU")
	sleep 0.3
	b0=$(cpu_busy "$a0" "$(cpu_snap "$PROXY_CPU")") b1=$(cpu_busy "$a1" "$(cpu_snap "$LOAD_CPU")")
	echo $((b0 > b1 ? b0 : b1))
}
# wait_idle: waits up to WAIT_IDLE s for a quiet machine; prints the last busy percent seen.
wait_idle() {
	local deadline=$((SECONDS + WAIT_IDLE)) b warned=0
	while :; do
		b=$(machine_busy)
		if ((b <= IDLE_MAX || SECONDS >= deadline)); then echo "$b"; return; fi
		if ((!warned)); then log "machine busy (${b}% on a core, not the rig); waiting up to ${WAIT_IDLE}s"; warned=1; fi
		sleep 1
	done
}
cpu_busy() { # "busy total" before, after -> whole percent
	awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
		if (t > 0) printf "%d", 100 * (y[1] - x[1]) / t + 0.5; else print 0 }'
}
# wrk latency ("812.00us", "1.23ms", "1.02s", "1.5m") -> milliseconds
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
		printf "%.3f", n }'
}

RES=$TMP/results
mkdir -p "$RES"

# load CASE TARGET SIZE DURATION OUTFILE: one run of the case's load generator.
load() {
	local c=$1 t=$2 s=$3 d=$4 out=$5 u
	u=$(url "$c" "$t" "$s")
	case "$c" in
	h2)
		local logf=/dev/null
		[[ $out == /dev/null ]] || logf=$out.log
		run_load "$out" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$d" --log-file="$logf" "$u"
		;;
	affinity) run_load "$out" wrk -t1 -c"$CONNS" -d"${d}s" --latency -H "Cookie: ${COOKIE[$t]}" "$u" ;;
	handshake) run_load "$out" wrk -t1 -c"$CONNS" -d"${d}s" --latency -H "Connection: close" "$u" ;;
	*) run_load "$out" wrk -t1 -c"$CONNS" -d"${d}s" --latency "$u" ;;
	esac
}

# summarize CASE OUTFILE: writes OUTFILE.sum ("req/s p50-ms p99-ms") and OUTFILE.notes (problems seen).
summarize() {
	local c=$1 f=$2
	: >"$f.notes"
	if [[ $c == h2 ]]; then
		local rps p50 p99 bad
		rps=$(awk '/^finished in/ { print $4 }' "$f")
		# --log-file: start time, status, microseconds to the end of the response, one request a line.
		read -r p50 p99 < <(awk -F'\t' '{print $3}' "$f.log" | sort -n | awk '{ a[NR] = $1 } END {
			if (NR == 0) { print "0 0"; exit }
			i50 = int(NR * 0.50); if (i50 < 1) i50 = 1; i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
			printf "%.3f %.3f\n", a[i50] / 1000, a[i99] / 1000 }')
		bad=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($i ~ /^(failed|errored|timeout),?$/ && $(i - 1) > 0) printf "%s %s ", $(i - 1), $i }' "$f")
		[[ -n $bad ]] && echo "requests ${bad% }" >>"$f.notes"
		bad=$(awk '/^status codes:/ { n = $5 + $7 + $9; if (n > 0) print n }' "$f")
		[[ -n $bad ]] && echo "$bad non-2xx" >>"$f.notes"
		[[ $KEEP_TMP == 1 ]] || rm -f "$f.log"
		echo "${rps:-0} $p50 $p99" >"$f.sum"
		return
	fi
	local rps non2xx sockerr
	rps=$(awk '/^Requests\/sec:/ {print $2}' "$f")
	echo "${rps:-0} $(to_ms "$(awk '$1 == "50%" {print $2}' "$f")") $(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")" >"$f.sum"
	non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$f")
	[[ -n $non2xx ]] && echo "$non2xx non-2xx" >>"$f.notes"
	sockerr=$(awk '/Socket errors:/ {sub(/.*Socket errors: /, ""); print}' "$f")
	[[ -n $sockerr ]] && echo "socket errors: $sockerr" >>"$f.notes"
	return 0
}

# ---- memory ----
# Results are keyed by target, and by target/tls and target/h2 for the HTTPS and HTTP/2 passes.
declare -A RSS_BEFORE=() RSS_HELD=() RSS_AFTER=() PSS_BEFORE=() PSS_HELD=() MEM_FAIL=()
HOLD_PID=
# MEM_TLS_PROXIES: the proxies whose HTTPS listener the memory benchmark also fills over HTTP/1.1
# (with https); MEM_H2_PROXIES: over HTTP/2 (with h2).
MEM_TLS_PROXIES=() MEM_H2_PROXIES=()
if selected memory; then
	for t in "${PROXIES[@]}"; do
		[[ $t == nginx || $t == haproxy || $t == fleetgate ]] || continue
		selected https && MEM_TLS_PROXIES+=("$t")
		selected h2 && MEM_H2_PROXIES+=("$t")
	done
fi
if selected memory && ((${#PROXIES[@]})); then
	log "memory: RSS idle, then holding $MEM_CONNS idle keep-alive connections (sources $MEM_SOURCES)"
	for k in "${PROXIES[@]}" "${MEM_TLS_PROXIES[@]/%//tls}" "${MEM_H2_PROXIES[@]/%//h2}"; do
		t=${k%/*} hold_addr=${ADDR[${k%/*}]} hold_tls=
		case $k in
		*/tls) hold_addr=$(ip_of "$t"):$TLS_PORT hold_tls=--tls ;;
		*/h2) hold_addr=$(ip_of "$t"):$TLS_PORT hold_tls="--tls --h2" ;;
		esac
		wait_idle >/dev/null
		pid=${TPID[$t]} f=$RES/memory.${k/\//-}.out
		RSS_BEFORE[$k]=$(rss_kib "$pid") PSS_BEFORE[$k]=$(pss_kib "$pid")
		taskset -c "$LOAD_CPU" "$TMP/bin/holdconns" --addr "$hold_addr" $hold_tls --n "$MEM_CONNS" --path /64 \
			--src "$MEM_SOURCES" >"$f" 2>&1 </dev/null &
		HOLD_PID=$!
		deadline=$((SECONDS + 90))
		until grep -q '^ready' "$f"; do
			if ! kill -0 "$HOLD_PID" 2>/dev/null || ((SECONDS >= deadline)); then
				MEM_FAIL[$k]=$(tail -n 1 "$f")
				break
			fi
			sleep 0.2
		done
		if [[ -z ${MEM_FAIL[$k]:-} ]]; then
			sleep "$MEM_SETTLE"
			RSS_HELD[$k]=$(rss_kib "$pid") PSS_HELD[$k]=$(pss_kib "$pid")
		fi
		kill -TERM "$HOLD_PID" 2>/dev/null || true
		wait "$HOLD_PID" 2>/dev/null || true
		HOLD_PID=
		sleep 1
		RSS_AFTER[$k]=$(rss_kib "$pid")
		log "memory: $(printf '%-14s idle %6d KiB   with %d conns %6s KiB   after %6d KiB  %s' "$k" "${RSS_BEFORE[$k]}" \
			"$MEM_CONNS" "${RSS_HELD[$k]:-?}" "${RSS_AFTER[$k]}" "$(head -n 1 "$f")")"
	done
fi

# ---- load benchmarks ----
total=0
for c in "${CASES[@]}"; do
	read -r -a tl <<<"$(case_targets "$c")"
	read -r -a sl <<<"${CASE_SIZES[$c]}"
	total=$((total + ROUNDS * ${#sl[@]} * ${#tl[@]}))
done
if ((total)); then
	log "measuring ${CASES[*]}: ROUNDS=$ROUNDS DURATION=${DURATION}s WARMUP=${WARMUP}s ($total runs, ~$((total * (DURATION + WARMUP + 1)))s)"
fi
run=0
for c in "${CASES[@]}"; do
	read -r -a tl <<<"$(case_targets "$c")"
	read -r -a sl <<<"${CASE_SIZES[$c]}"
	nt=${#tl[@]}
	for ((r = 1; r <= ROUNDS; r++)); do
		for s in "${sl[@]}"; do
			for ((k = 0; k < nt; k++)); do
				t=${tl[(k + r - 1) % nt]}
				run=$((run + 1))
				f=$RES/$c.$s.$t.$r.txt
				for ((try = 0; ; try++)); do
					pre=$(wait_idle)
					load "$c" "$t" "$s" "$WARMUP" /dev/null || true
					cpu0=$(cpu_snap "$PROXY_CPU") cpu1=$(cpu_snap "$LOAD_CPU")
					tp=${TPID[$t]} ticks=$(proc_ticks "${TPID[$t]}") t0=$(date +%s.%N)
					if ! load "$c" "$t" "$s" "$DURATION" "$f"; then
						cat "$f" >&2
						die "$c: load generator failed against $t ($(url "$c" "$t" "$s"))"
					fi
					busy0=$(cpu_busy "$cpu0" "$(cpu_snap "$PROXY_CPU")") busy1=$(cpu_busy "$cpu1" "$(cpu_snap "$LOAD_CPU")")
					own=$(awk -v a="$ticks" -v b="$(proc_ticks "$tp")" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$(date +%s.%N)" \
						'BEGIN { printf "%d", 100 * (b - a) / hz / (t1 - t0) + 0.5 }')
					post=$(machine_busy)
					summarize "$c" "$f"
					read -r rps _ <"$f.sum"
					noisy=$((pre > IDLE_MAX || post > IDLE_MAX))
					log "[$run/$total] $(printf '%-9s round %s  %-4s %-10s %9s req/s   %s CPU %3s%%  core %s busy %3s%%  core %s busy %3s%%%s' \
						"$c" "$r" "$s" "$t" "$rps" "$([[ $t == noproxy ]] && echo origin || echo proxy)" "$own" "$PROXY_CPU" "$busy0" "$LOAD_CPU" "$busy1" \
						"$( ((noisy)) && echo "  (other load on the machine: ${pre}% before, ${post}% after)")")"
					if ((noisy && try < RETRIES)); then
						log "    measuring it again (retry $((try + 1))/$RETRIES)"
						continue
					fi
					break
				done
				echo "$busy0 $busy1 $own $pre $post" >"$RES/$c.$s.$t.$r.cpu"
			done
		done
	done
done

# ---- paired: Fleetgate and one peer loaded at once, on the proxy core ----
# requests_of CASE OUTFILE: the requests a load run completed.
requests_of() {
	if [[ $1 == h2 ]]; then
		awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($i ~ /^succeeded,?$/) print $(i - 1) }' "$2"
	else
		awk '/ requests in / { print $1 }' "$2"
	fi
}
PAIR_PEERS=()
if selected paired && running fleetgate; then
	for t in "${PEERS[@]}"; do [[ $t == fleetgate ]] || PAIR_PEERS+=("$t"); done
fi
if ((${#PAIR_PEERS[@]})); then
	ptotal=$(($(wc -w <<<"$PAIRED_CASES") * ${#PAIR_PEERS[@]} * ROUNDS)) prun=0
	log "paired: Fleetgate and each of ${PAIR_PEERS[*]} loaded at once on core $PROXY_CPU ($PAIRED_CASES, 64 B; $ptotal runs, ~$((ptotal * (DURATION + WARMUP + 2)))s)"
	for c in $PAIRED_CASES; do
		for t in "${PAIR_PEERS[@]}"; do
			for ((r = 1; r <= ROUNDS; r++)); do
				prun=$((prun + 1))
				f=$RES/paired.$c.$t.$r
				pre=$(wait_idle)
				load "$c" fleetgate 64 "$WARMUP" /dev/null &
				PAIR_PID=$!
				load "$c" "$t" 64 "$WARMUP" /dev/null || true
				wait "$PAIR_PID" || true
				a0=$(proc_ticks "${TPID[fleetgate]}") b0=$(proc_ticks "${TPID[$t]}")
				load "$c" fleetgate 64 "$DURATION" "$f.fleetgate.txt" &
				PAIR_PID=$!
				load "$c" "$t" 64 "$DURATION" "$f.$t.txt" || { cat "$f.$t.txt" >&2; die "paired $c: load generator failed against $t"; }
				wait "$PAIR_PID" || { cat "$f.fleetgate.txt" >&2; die "paired $c: load generator failed against fleetgate"; }
				PAIR_PID=
				a1=$(proc_ticks "${TPID[fleetgate]}") b1=$(proc_ticks "${TPID[$t]}")
				post=$(machine_busy)
				summarize "$c" "$f.fleetgate.txt"
				summarize "$c" "$f.$t.txt"
				nf=$(requests_of "$c" "$f.fleetgate.txt") np=$(requests_of "$c" "$f.$t.txt")
				# CPU microseconds a request, each; Fleetgate's requests per CPU second over the peer's.
				awk -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v nf="${nf:-0}" -v np="${np:-0}" -v hz="$CLK_TCK" 'BEGIN {
					if (nf > 0 && np > 0 && a > 0) printf "%.2f %.2f %.3f %d %d\n", a * 1e6 / hz / nf, b * 1e6 / hz / np, (b / np) / (a / nf), nf, np
					else print "0 0 0 0 0" }' >"$f.res"
				echo "$pre $post" >"$f.cpu"
				read -r cf cp pr _ <"$f.res"
				log "[paired $prun/$ptotal] $(printf '%-5s round %s  fleetgate %6s us a request   %-8s %6s us   ratio %s%s' "$c" "$r" "$cf" "$t" "$cp" "$pr" \
					"$( ((pre > IDLE_MAX || post > IDLE_MAX)) && echo "  (other load on the machine: ${pre}% before, ${post}% after)")")"
			done
		done
	done
fi

# ---- routing: dataplane/route's Go benchmarks ----
if selected routing; then
	log "routing: go test -bench BenchmarkMatch -benchtime $ROUTING_BENCHTIME -count $ROUTING_COUNT, pinned to core $PROXY_CPU"
	wait_idle >/dev/null
	(cd "$ROOT/dataplane/route" && taskset -c "$PROXY_CPU" "$TMP/bin/route.test" -test.run '^$' -test.bench '^BenchmarkMatch' \
		-test.benchtime "$ROUTING_BENCHTIME" -test.count "$ROUTING_COUNT" -test.cpu 1 -test.benchmem) >"$RES/routing.txt" 2>&1 ||
		{ cat "$RES/routing.txt" >&2; die "routing benchmarks failed"; }
fi

# ---- report ----
median() { # numbers on stdin
	sort -g | awk '{a[NR] = $1} END { if (NR == 0) { print ""; exit }
		if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
fmt_k() { awk -v v="$1" 'BEGIN { printf "%.1fk", v / 1000 }'; }
fmt_ms() { awk -v v="$1" 'BEGIN { if (v < 10) printf "%.2f ms", v; else printf "%.1f ms", v }'; }
fmt_mib() { awk -v v="$1" 'BEGIN { printf "%.1f MiB", v / 1024 }'; }
join() { # SEP ITEMS...
	local sep=$1 out="" x
	shift
	for x in "$@"; do out+="${out:+$sep}$x"; done
	echo "$out"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", a / b; else print "-" }'; }
# col FIELD CASE SIZE TARGET: the FIELD-th value of every round's summary (1 req/s, 2 p50, 3 p99) or,
# for FIELD c1..c5, of its CPU line (busy core 0, busy core 1, proxy CPU, busy before, busy after).
col() {
	local fld=$1 c=$2 s=$3 t=$4 r
	for ((r = 1; r <= ROUNDS; r++)); do
		case "$fld" in
		c*) awk -v i="${fld#c}" '{print $i}' "$RES/$c.$s.$t.$r.cpu" ;;
		*) awk -v i="$fld" '{print $i}' "$RES/$c.$s.$t.$r.txt.sum" ;;
		esac
	done
}

case_title() {
	case "$1" in
	basic) echo "Basic rule, one origin, HTTP/1.1 keep-alive (\`wrk -t1 -c$CONNS\`)" ;;
	affinity) echo "Cookie affinity, a returning client sending its cookie; pool of two servers (\`wrk -t1 -c$CONNS\`)" ;;
	rules) echo "URL path map of $RULES prefix rules, requests taking rule $RULE_HIT (\`wrk -t1 -c$CONNS\`)" ;;
	https) echo "HTTPS listener (TLS 1.3), HTTP/1.1 keep-alive (\`wrk -t1 -c$CONNS\`: handshakes amortised)" ;;
	handshake) echo "HTTPS listener (TLS 1.3), a new connection per request (\`wrk -t1 -c$CONNS -H 'Connection: close'\`)" ;;
	h2) echo "HTTP/2 over TLS, ALPN h2 (\`h2load -t1 -c$H2_CONNS -m$H2_STREAMS\`: $((H2_CONNS * H2_STREAMS)) streams in flight)" ;;
	esac
}
case_notes() {
	local t
	case "$1" in
	affinity)
		echo "- Fleetgate \`cookieBasedAffinity: Enabled\` (HMAC cookie checked per request), HAProxy \`cookie SRV insert indirect nocache\`, nginx OSS \`hash \$cookie_srv consistent\` (no sticky cookie in nginx OSS: it routes on the client's cookie and never issues one)."
		for t in "${PEERS[@]}"; do
			[[ -n ${COOKIE[$t]:-} ]] && echo "- ${LABEL[$t]}: sends \`Cookie: ${COOKIE[$t]:0:60}$( ((${#COOKIE[$t]} > 60)) && echo ...)\`; Set-Cookie headers on a response to it: ${REISSUE[$t]:-?}."
		done
		;;
	rules) echo "- Fleetgate \`urlPathMaps\` with $RULES \`/rN/*\` rules, nginx $RULES \`location /rN/\` blocks, HAProxy $RULES \`use_backend rN if { path_beg /rN/ }\` (evaluated in order); every rule has its own backend (pool) holding the origin." ;;
	https | handshake | h2)
		echo "- One ECDSA P-256 certificate; nginx \`ssl_protocols TLSv1.3\`, session cache and tickets; HAProxy \`ssl-min-ver TLSv1.3\`, \`alpn h2,http/1.1\`; Fleetgate Https listener (Go crypto/tls, session tickets)."
		for t in "${PEERS[@]}"; do
			[[ -n ${TLSINFO[$t]:-} ]] && echo "- ${LABEL[$t]}: ${TLSINFO[$t]} (openssl s_client)."
		done
		;;
	esac
	[[ $1 == handshake ]] && echo "- wrk resumes the TLS session on each new connection (checked with nginx's \$ssl_session_reused), so this measures TCP setup plus a resumed TLS 1.3 handshake (PSK with ECDHE) per request, not full handshakes."
	[[ $1 == h2 ]] && echo "- p50/p99 from h2load's per-request log (time to the end of each response)."
	return 0
}

declare -A MED=() EFF=() # CASE.SIZE.TARGET -> median req/s, median req/s per proxy CPU
case_report() {
	local c=$1 s t r tl rounds p50 p99 notes footnotes fg rt rte own eff b0 b1 name n pre post
	read -r -a tl <<<"$(case_targets "$c")"
	echo
	echo "### $(case_title "$c")"
	for s in ${CASE_SIZES[$c]}; do
		for t in "${tl[@]}"; do
			MED[$c.$s.$t]=$(col 1 "$c" "$s" "$t" | median)
			# req/s per core of the proxy's own CPU, per round, median: the rig's ceiling hides a proxy's
			# headroom when it does not fill its core.
			EFF[$c.$s.$t]=$(for ((r = 1; r <= ROUNDS; r++)); do
				awk -v rps="$(awk '{print $1}' "$RES/$c.$s.$t.$r.txt.sum")" '{ if ($3 > 0) print rps * 100 / $3 }' "$RES/$c.$s.$t.$r.cpu"
			done | median)
		done
		fg=${MED[$c.$s.fleetgate]:-}
		echo
		echo "#### $(size_bytes "$s")-byte responses"
		echo
		echo "| target | req/s per round | median req/s | p50 | p99 | Fleetgate ratio | proxy CPU | req/s per proxy CPU | Fleetgate ratio per CPU | core $PROXY_CPU / $LOAD_CPU busy |"
		echo "|---|---|---|---|---|---|---|---|---|---|"
		footnotes=()
		for t in "${tl[@]}"; do
			rounds=() notes=()
			for ((r = 1; r <= ROUNDS; r++)); do
				rounds+=("$(fmt_k "$(awk '{print $1}' "$RES/$c.$s.$t.$r.txt.sum")")")
				while IFS= read -r n; do [[ -n $n ]] && notes+=("round $r: $n"); done <"$RES/$c.$s.$t.$r.txt.notes"
				read -r _ _ _ pre post <"$RES/$c.$s.$t.$r.cpu"
				((pre > IDLE_MAX || post > IDLE_MAX)) && notes+=("round $r ran while something else loaded the machine (a core ${pre}% busy before, ${post}% after)")
			done
			b0=$(col c1 "$c" "$s" "$t" | median) b1=$(col c2 "$c" "$s" "$t" | median) own=$(col c3 "$c" "$s" "$t" | median)
			if [[ $t == noproxy ]]; then
				own=- eff=- rte=-
			else
				own="${own%.*}%" eff=$(fmt_k "${EFF[$c.$s.$t]}")
				if [[ -n $fg ]]; then rte=$(ratio "${EFF[$c.$s.fleetgate]}" "${EFF[$c.$s.$t]}"); else rte=-; fi
			fi
			p50=$(col 2 "$c" "$s" "$t" | median) p99=$(col 3 "$c" "$s" "$t" | median)
			if [[ -n $fg ]]; then rt=$(ratio "$fg" "${MED[$c.$s.$t]}"); else rt=-; fi
			name=${LABEL[$t]}
			if ((${#notes[@]})); then
				name="$name ⚠"
				for n in "${notes[@]}"; do footnotes+=("- ⚠ ${LABEL[$t]}: $n"); done
			fi
			echo "| $name | $(join " / " "${rounds[@]}") | $(fmt_k "${MED[$c.$s.$t]}") | $(fmt_ms "$p50") | $(fmt_ms "$p99") | $rt | $own | $eff | $rte | ${b0%.*}% / ${b1%.*}% |"
		done
		if ((${#footnotes[@]})); then
			echo
			printf '%s\n' "${footnotes[@]}"
		fi
	done
	echo
	case_notes "$c"
}

memory_report() {
	echo
	echo "### Memory: RSS idle and holding $MEM_CONNS idle keep-alive client connections"
	echo
	echo "Each connection made one \`GET /64\` on the basic listener (\`scripts/bench/holdconns\`, sources $MEM_SOURCES), then idles; memory read ${MEM_SETTLE}s after the last answer. Every proxy is configured for $MAXCONN connections (nginx \`worker_connections\`, HAProxy \`maxconn\`, Fleetgate \`maxConnectionsPerListener\`) and holds the listeners of every benchmark of this run; idle: after start and the checks (a few requests), before any load."
	memory_table "" "${PROXIES[@]}"
	if ((${#MEM_TLS_PROXIES[@]})); then
		echo
		echo "Over HTTPS (the TLS 1.3 listener of the https benchmark; \`holdconns --tls\`), one proxy after the other, after the plain pass:"
		memory_table /tls "${MEM_TLS_PROXIES[@]}"
	fi
	if ((${#MEM_H2_PROXIES[@]})); then
		echo
		echo -n "Over HTTP/2 (ALPN h2 on the TLS 1.3 listener; \`holdconns --tls --h2\`: one GET on stream 1, the server's settings acknowledged), one proxy after the other, after the passes above"
		if ((${#MEM_TLS_PROXIES[@]})); then
			echo " (nginx and HAProxy keep the HTTPS pass's memory: their idle RSS here; BENCH=memory,h2 measures this pass without it):"
		else
			echo ":"
		fi
		memory_table /h2 "${MEM_H2_PROXIES[@]}"
	fi
	echo
	echo "- RSS: the sum over the proxy's processes (nginx's master and worker count their shared pages twice); PSS counts a page shared by N processes 1/N in each, so its sum is the proxy's own footprint."
	echo "- net/http servers (Caddy, the ReverseProxy) keep, per idle connection, a goroutine with its stack and the connection's read and write buffers; nginx and HAProxy keep a small connection structure and release the buffers of an idle keep-alive connection. Fleetgate does as they do: after 100 ms idle a connection waits in an epoll set of its server's with no goroutine and no buffer of its own (\`dataplane/http1\`'s parker; Go's TLS connection keeps its record buffers and ciphers), and an idle worker hands its garbage back to the OS (\`dataplane/gcpace\`)."
	[[ -n $HAPROXY_NOTE ]] && echo "- $HAPROXY_NOTE"
	[[ -n $MEM_NOTE ]] && echo "- ⚠ $MEM_NOTE"
	return 0
}

# memory_table SUFFIX TARGET...: the memory table of the results keyed TARGET+SUFFIX.
memory_table() {
	local sfx=$1 t k fg_held fg_idle per pss
	shift
	echo
	echo "| target | idle RSS | RSS with $MEM_CONNS conns | growth | per connection | after closing them | PSS idle / with conns | Fleetgate ratio idle / with conns |"
	echo "|---|---|---|---|---|---|---|---|"
	fg_idle=${RSS_BEFORE[fleetgate$sfx]:-} fg_held=${RSS_HELD[fleetgate$sfx]:-}
	for t in "$@"; do
		k=$t$sfx
		pss="${PSS_BEFORE[$k]:+$(fmt_mib "${PSS_BEFORE[$k]}")} / ${PSS_HELD[$k]:+$(fmt_mib "${PSS_HELD[$k]}")}"
		if [[ -n ${MEM_FAIL[$k]:-} ]]; then
			echo "| ${LABEL[$t]} ⚠ | $(fmt_mib "${RSS_BEFORE[$k]}") | failed: ${MEM_FAIL[$k]} | - | - | $(fmt_mib "${RSS_AFTER[$k]}") | $pss | - |"
			continue
		fi
		per=$(awk -v a="${RSS_BEFORE[$k]}" -v b="${RSS_HELD[$k]}" -v n="$MEM_CONNS" 'BEGIN { printf "%.1f KiB", (b - a) / n }')
		echo "| ${LABEL[$t]} | $(fmt_mib "${RSS_BEFORE[$k]}") | $(fmt_mib "${RSS_HELD[$k]}") | $(fmt_mib $((RSS_HELD[$k] - RSS_BEFORE[$k]))) | $per | $(fmt_mib "${RSS_AFTER[$k]}") | $pss | $(ratio "$fg_idle" "${RSS_BEFORE[$k]}") / $(ratio "$fg_held" "${RSS_HELD[$k]}") |"
	done
}

routing_report() {
	local f=$RES/routing.txt
	echo
	echo "### Routing cost as rules grow (\`go test -bench BenchmarkMatch ./dataplane/route/\`)"
	echo
	echo "One core (\`-cpu 1\`, pinned to core $PROXY_CPU), \`-benchtime $ROUTING_BENCHTIME -count $ROUTING_COUNT\`, median ns per lookup; the request is for the middle rule (the miss row: for none)."
	echo
	echo "| lookup | 10 | 1,000 | 10,000 | 10,000 / 10 | allocs/op |"
	echo "|---|---|---|---|---|---|"
	local name label v10 v1k v10k allocs
	for name in MatchPaths MatchHosts/exact MatchHosts/wildcard MatchHosts/wildcard-miss; do
		case "$name" in
		MatchPaths) label="path rules (\`/svcN/api/*\` prefixes in one URL path map)" ;;
		MatchHosts/exact) label="host names, exact (one multi-site listener each)" ;;
		MatchHosts/wildcard) label="host names, wildcard \`*.hN.example.com\`" ;;
		MatchHosts/wildcard-miss) label="host names, wildcard, a host none takes (falls to the basic listener)" ;;
		esac
		grep -q "^Benchmark$name/10[ 	]" "$f" || continue
		v10=$(awk -v b="Benchmark$name/10" '$1 == b { print $3 }' "$f" | median)
		v1k=$(awk -v b="Benchmark$name/1000" '$1 == b { print $3 }' "$f" | median)
		v10k=$(awk -v b="Benchmark$name/10000" '$1 == b { print $3 }' "$f" | median)
		allocs=$(awk -v p="Benchmark$name/" 'index($1, p) == 1 { for (i = 1; i < NF; i++) if ($(i + 1) == "allocs/op" && $i > m) m = $i } END { print m + 0 }' "$f")
		echo "| $label | $v10 ns | $v1k ns | $v10k ns | $(ratio "$v10k" "$v10") | $allocs |"
	done
}

# PAIR_MED[CASE.PEER]: median over rounds of Fleetgate's requests per CPU second over the peer's, paired.
declare -A PAIR_MED=()
paired_report() {
	local c t r rounds cfs cps notes footnotes pre post cf cp pr nf np
	echo
	echo "### Paired: Fleetgate and one peer loaded at the same time, on the same core"
	echo
	echo "Both proxies pinned to core $PROXY_CPU (the scheduler gives each about half of it), each loaded by its own load generator on core $LOAD_CPU (as in the tables above: \`wrk -t1 -c$CONNS\`, \`h2load -t1 -c$H2_CONNS -m$H2_STREAMS\`), 64-byte responses, ${DURATION}s runs, $ROUNDS rounds. CPU time a request of each (user and system, /proc), and their ratio: Fleetgate's requests per CPU second over the peer's. Both proxies share every disturbance of the machine within a round, so the ratio of a round holds steady where single runs, one proxy after the other, vary by tens of percent. With half a core each, a proxy serves fewer requests a wake-up than with a core of its own: fixed costs a wake-up weigh more here."
	echo
	echo "| benchmark | peer | Fleetgate CPU a request | peer CPU a request | Fleetgate / peer req/s | ratio per round | median ratio |"
	echo "|---|---|---|---|---|---|---|"
	footnotes=()
	for c in $PAIRED_CASES; do
		for t in "${PAIR_PEERS[@]}"; do
			rounds=() cfs=() cps=() notes=""
			local rf=() rp=()
			for ((r = 1; r <= ROUNDS; r++)); do
				read -r cf cp pr nf np <"$RES/paired.$c.$t.$r.res"
				read -r pre post <"$RES/paired.$c.$t.$r.cpu"
				rounds+=("$pr") cfs+=("$cf") cps+=("$cp") rf+=("$nf") rp+=("$np")
				((pre > IDLE_MAX || post > IDLE_MAX)) && footnotes+=("- ⚠ $c, ${LABEL[$t]}, round $r ran while something else loaded the machine (a core ${pre}% busy before, ${post}% after)") && notes=" ⚠"
			done
			PAIR_MED[$c.$t]=$(printf '%s\n' "${rounds[@]}" | median)
			echo "| $c | ${LABEL[$t]}$notes | $(printf '%s\n' "${cfs[@]}" | median | xargs printf '%.1f') us | $(printf '%s\n' "${cps[@]}" | median | xargs printf '%.1f') us | $(fmt_k "$(printf '%s\n' "${rf[@]}" | median | awk -v d="$DURATION" '{ print $1 / d }')") / $(fmt_k "$(printf '%s\n' "${rp[@]}" | median | awk -v d="$DURATION" '{ print $1 / d }')") | $(join " / " "${rounds[@]/%/x}") | **$(printf '%.2f' "${PAIR_MED[$c.$t]}")x** |"
		done
	done
	if ((${#footnotes[@]})); then
		echo
		printf '%s\n' "${footnotes[@]}"
	fi
}

summary_report() {
	local c s t peers=() line cells
	for t in "${TARGET_LIST[@]}"; do [[ $t == fleetgate ]] || peers+=("$t"); done
	echo
	echo "### Summary: Fleetgate's median req/s over each peer's (per proxy CPU second in brackets)"
	echo
	line="| benchmark | size |"
	for t in "${peers[@]}"; do line+=" ${SHORT[$t]} |"; done
	echo "$line"
	line="|---|---|"
	for t in "${peers[@]}"; do line+="---|"; done
	echo "$line"
	for c in "${CASES[@]}"; do
		for s in ${CASE_SIZES[$c]}; do
			cells=""
			for t in "${peers[@]}"; do
				if [[ -z ${MED[$c.$s.$t]:-} ]]; then
					cells+=" |"
				elif [[ $t == noproxy ]]; then
					cells+=" $(ratio "${MED[$c.$s.fleetgate]}" "${MED[$c.$s.$t]}") |"
				else
					cells+=" $(ratio "${MED[$c.$s.fleetgate]}" "${MED[$c.$s.$t]}") ($(ratio "${EFF[$c.$s.fleetgate]}" "${EFF[$c.$s.$t]}")) |"
				fi
			done
			echo "| $c | $s |$cells"
		done
	done
	if ((${#PAIR_PEERS[@]})); then
		for c in $PAIRED_CASES; do
			cells=""
			for t in "${peers[@]}"; do
				if [[ -z ${PAIR_MED[$c.$t]:-} ]]; then cells+=" |"; else cells+=" ($(printf '%.2f' "${PAIR_MED[$c.$t]}")x) |"; fi
			done
			echo "| paired, $c (per CPU, loaded at once) | 64 |$cells"
		done
	fi
	if selected memory; then
		cells=""
		for t in "${peers[@]}"; do
			if [[ $t == noproxy || -z ${RSS_HELD[$t]:-} || -z ${RSS_HELD[fleetgate]:-} ]]; then cells+=" |"; else
				cells+=" $(ratio "${RSS_HELD[fleetgate]}" "${RSS_HELD[$t]}") (idle $(ratio "${RSS_BEFORE[fleetgate]}" "${RSS_BEFORE[$t]}")) |"
			fi
		done
		echo "| memory: RSS with $MEM_CONNS conns (lower is better) | - |$cells"
		local sfx label
		for sfx in tls h2; do
			case $sfx in
			tls) ((${#MEM_TLS_PROXIES[@]})) || continue; label=HTTPS ;;
			h2) ((${#MEM_H2_PROXIES[@]})) || continue; label=HTTP/2 ;;
			esac
			cells=""
			for t in "${peers[@]}"; do
				if [[ -z ${RSS_HELD[$t/$sfx]:-} || -z ${RSS_HELD[fleetgate/$sfx]:-} ]]; then cells+=" |"; else
					cells+=" $(ratio "${RSS_HELD[fleetgate/$sfx]}" "${RSS_HELD[$t/$sfx]}") |"
				fi
			done
			echo "| memory: RSS with $MEM_CONNS $label conns (lower is better) | - |$cells"
		done
	fi
}

REPORT=$TMP/report.md
{
	echo "## Fleetgate benchmark"
	echo
	echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sr), $ncpu cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo '?'))."
	# Each tool's version line; `|| true`: some exit non-zero after printing it (wrk -v), which would
	# end this script (set -e with pipefail) on a plain assignment.
	versions="fleetgate $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- dataplane 2>/dev/null || echo ' (+ uncommitted dataplane changes)'), $(go version | awk '{print $3}')"
	if running nginx; then versions+=", $(nginx -v 2>&1 | sed 's/.*: //' || true)"; fi
	if running haproxy; then versions+=", haproxy $(haproxy -v 2>&1 | awk 'NR==1 {print $3}' || true)"; fi
	if running caddy; then versions+=", caddy $(caddy version 2>&1 | awk 'NR==1 {print $1}' || true)"; fi
	if ((${#CASES[@]})) || selected paired; then versions+=", $(wrk -v 2>&1 | awk 'NR==1 {print $1, $2}' || true)"; fi
	if need_h2load; then versions+=", h2load $(h2load --version 2>&1 | awk 'NR==1 {print $2}' || true)"; fi
	echo "$versions."
	echo "Benchmarks: $(for b in basic memory affinity rules https handshake h2 paired routing; do selected "$b" && printf '%s ' "$b"; done | sed 's/ $//')."
	if ((${#CASES[@]})); then
		echo "Each proxy pinned to core $PROXY_CPU with one worker; origin (GOMAXPROCS=1) and the load generator on core $LOAD_CPU; ${DURATION}s runs, ${WARMUP}s warm-up before each; $ROUNDS round(s), targets interleaved."
	fi
	((${#CASES[@]})) && selected basic && case_report basic
	selected memory && ((${#PROXIES[@]})) && memory_report
	for c in "${CASES[@]}"; do [[ $c == basic ]] || case_report "$c"; done
	((${#PAIR_PEERS[@]})) && paired_report
	selected routing && routing_report
	if { ((${#CASES[@]})) || ((${#PAIR_PEERS[@]})); } && running fleetgate; then
		summary_report
		cat <<EOF

- proxy CPU: the proxy's own processes' CPU time during the run (100% = one core).
- req/s per proxy CPU: each round's req/s divided by that share, median over rounds: an estimate of what
  one full core would carry. It matters when a proxy does not fill its core: then the rig (core $LOAD_CPU,
  the load generator and the origin) capped its req/s, not the proxy, and the plain ratio flatters the
  slower proxy.
- core busy: share of each core outside idle, kernel work included. A core much busier than the
  processes on it account for points at other load on the machine.
EOF
	fi
} >"$REPORT"

echo
cat "$REPORT"
if [[ -n $OUT ]]; then
	cp "$REPORT" "$OUT"
	log "report written to $OUT"
fi
