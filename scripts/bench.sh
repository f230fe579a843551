#!/usr/bin/env bash
# Benchmark rig of shared/PERFORMANCE.md: Fleetgate's data plane against nginx, HAProxy, Caddy and Go's
# httputil.ReverseProxy, all in front of the same small Go origin.
#
# Layout (2 cores):
#   core PROXY_CPU (0): the proxy under test, one worker (nginx worker_processes 1, haproxy nbthread 1,
#                        Go programs GOMAXPROCS=1)
#   core LOAD_CPU  (1): wrk -t1 -c64 and the origin (GOMAXPROCS=1); the control plane too (idle,
#                        and run with --insecure: its TLS is no part of the proxy path measured here)
# Every target is started once and stays up; they are measured one at a time, round-robin within each
# round (the starting target rotates per round), so drift hits all of them alike.
#
# Usage: scripts/bench.sh [--quick] [--keep-tmp]
#   --quick      DURATION=2 ROUNDS=1 (smoke test)
#   --keep-tmp   keep the temp dir (configs, logs, raw wrk output)
# Environment knobs:
#   DURATION   seconds per measured run (default 6)
#   ROUNDS     rounds (default 3)
#   SIZES      body sizes, origin paths (default "64 16k")
#   TARGETS    subset/order of: noproxy nginx haproxy caddy goproxy fleetgate (default all)
#   WARMUP     warm-up seconds before each measured run (default 1)
#   CONNS      wrk connections (default 64)
#   IDLE_MAX / WAIT_IDLE   before each run, wait up to WAIT_IDLE s (default 20) until no core is more than
#              IDLE_MAX % busy (default 10) with the rig idle; the same check runs after each run
#   RETRIES    a run with other load before or after it is measured again, up to RETRIES times
#              (default 2); if still noisy it is kept and flagged ⚠ in the report
#   PROXY_CPU / LOAD_CPU   cores (default 0 / 1)
#   SKIP_BUILD=1  use the binaries already in bin/ (make bench has just built them)
#   OUT=FILE   also write the markdown report to FILE
# Only loopback addresses (127.0.0.x) and high ports are used; see the address table below.
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
fi
DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"64 16k"}
TARGETS=${TARGETS:-"noproxy nginx haproxy caddy goproxy fleetgate"}
WARMUP=${WARMUP:-1}
IDLE_MAX=${IDLE_MAX:-10}
WAIT_IDLE=${WAIT_IDLE:-20}
RETRIES=${RETRIES:-2}
CONNS=${CONNS:-64}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

# ---- addresses (loopback only) ----
ORIGIN_ADDR=127.0.0.1:19000
CP_ADDR=127.0.0.1:17070
ETCD_CLIENT=127.0.0.1:17379
ETCD_PEER=127.0.0.1:17380
declare -A ADDR=(
	[noproxy]=$ORIGIN_ADDR
	[fleetgate]=127.0.0.2:18080
	[nginx]=127.0.0.3:18081
	[haproxy]=127.0.0.4:18082
	[caddy]=127.0.0.5:18083
	[goproxy]=127.0.0.6:18084
)
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
read -r -a SIZE_LIST <<<"$SIZES"
has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- tools ----
ensure_tools() {
	local -A pkg_of=([nginx]=nginx [haproxy]=haproxy [caddy]=caddy [wrk]=wrk [taskset]=util-linux [curl]=curl [ss]=iproute2)
	local missing=() c
	for c in nginx haproxy caddy wrk taskset curl ss; do
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
	for c in nginx haproxy caddy wrk taskset curl ss; do
		command -v "$c" >/dev/null 2>&1 || die "$c still missing after apt-get install"
	done
}
ensure_tools

ncpu=$(nproc)
((ncpu >= 2)) || log "warning: only $ncpu core(s); proxy and load generator will share a core"
((PROXY_CPU < ncpu && LOAD_CPU < ncpu)) || die "PROXY_CPU=$PROXY_CPU / LOAD_CPU=$LOAD_CPU: this machine has $ncpu core(s)"

# ---- temp dir and process bookkeeping ----
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fleetgate-bench.XXXXXX")
chmod 755 "$TMP" # nginx workers (user nobody) must reach their temp dirs
PIDS=()
declare -A PNAME=() PLOG=() TPID=() # TPID: target -> pid of the process serving it

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local i pid n
	[[ -n ${WRK_PID:-} ]] && kill -TERM "$WRK_PID" 2>/dev/null
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
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)
		[[ $code == 200 ]] && return 0
		((SECONDS < deadline)) || fail_with_log "$name" "$url did not answer 200 within ${timeout}s (last status: ${code:-none})"
		sleep 0.2
	done
}

port_free() { # HOST:PORT
	[[ -z $(ss -Hltn "( sport = :${1##*:} )" 2>/dev/null) ]]
}

size_bytes() { # 64 -> 64, 16k -> 16384, 1m -> 1048576
	local s=$1
	case "$s" in
	*[kK]) echo $((${s%?} * 1024)) ;;
	*[mM]) echo $((${s%?} * 1024 * 1024)) ;;
	*) echo "$s" ;;
	esac
}

# ---- build ----
BIN=$ROOT/bin
if [[ $SKIP_BUILD != 1 ]] || [[ ! -x $BIN/dataplane ]]; then
	log "building bin/controlplane bin/gatewayctl bin/dataplane"
	go build -o "$BIN/" ./controlplane/cmd/controlplane ./controlplane/cmd/gatewayctl ./dataplane/cmd/dataplane
fi
log "building the origin and the ReverseProxy baseline"
go build -o "$TMP/bin/" ./scripts/bench/origin ./scripts/bench/reverseproxy

# ---- ports must be free ----
need_ports=("$ORIGIN_ADDR")
for t in "${TARGET_LIST[@]}"; do [[ $t == noproxy ]] || need_ports+=("${ADDR[$t]}"); done
has_target fleetgate && need_ports+=("$CP_ADDR" "$ETCD_CLIENT" "$ETCD_PEER")
for a in "${need_ports[@]}"; do
	port_free "$a" || die "port ${a##*:} is already in use (needed for $a); stop whatever holds it"
done

# ---- origin ----
start origin "$LOAD_CPU" GOMAXPROCS=1 -- "$TMP/bin/origin" --listen "$ORIGIN_ADDR"
pid=$STARTED_PID
wait_http origin "$pid" "http://$ORIGIN_ADDR/64"
TPID[noproxy]=$pid

# ---- peers ----
start_nginx() {
	local d=$TMP/nginx a=${ADDR[nginx]}
	mkdir -p "$d/tmp"
	chmod 777 "$d/tmp"
	cat >"$d/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/tmp/client;
    proxy_temp_path       $d/tmp/proxy;
    fastcgi_temp_path     $d/tmp/fastcgi;
    uwsgi_temp_path       $d/tmp/uwsgi;
    scgi_temp_path        $d/tmp/scgi;
    # No per-connection request cap: the other proxies have none either.
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
}
EOF
	local pid
	start nginx "$PROXY_CPU" -- nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
	pid=$STARTED_PID
	wait_http nginx "$pid" "http://$a/64"
	TPID[nginx]=$pid
	PLOG[nginx]=$d/error.log
}

start_haproxy() {
	local d=$TMP/haproxy a=${ADDR[haproxy]}
	mkdir -p "$d"
	cat >"$d/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096

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
	local d=$TMP/fleetgate a=${ADDR[fleetgate]}
	mkdir -p "$d/cp" "$d/dp"
	cat >"$d/gateway.yaml" <<EOF
name: bench
httpListeners: [{name: web, port: ${a##*:}}]
backendAddressPools: [{name: origin, backendAddresses: [{ipAddress: ${ORIGIN_ADDR%:*}}]}]
backendHttpSettingsCollection: [{name: s, port: ${ORIGIN_ADDR##*:}, requestTimeout: 20}]
requestRoutingRules: [{name: r, ruleType: Basic, priority: 1, httpListener: web, backendAddressPool: origin, backendHttpSettings: s}]
EOF
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
		--id dp-bench --bind-address "${a%:*}" --state-dir "$d/dp" --shutdown-grace 1s
	pid=$STARTED_PID
	wait_http dataplane "$pid" "http://$a/64" 30
	TPID[fleetgate]=$pid
}

for t in "${TARGET_LIST[@]}"; do
	case "$t" in
	noproxy) ;;
	nginx) log "starting nginx on ${ADDR[nginx]}"; start_nginx ;;
	haproxy) log "starting haproxy on ${ADDR[haproxy]}"; start_haproxy ;;
	caddy) log "starting caddy on ${ADDR[caddy]}"; start_caddy ;;
	goproxy) log "starting go ReverseProxy on ${ADDR[goproxy]}"; start_goproxy ;;
	fleetgate) log "starting fleetgate (control plane $CP_ADDR, data plane ${ADDR[fleetgate]})"; start_fleetgate ;;
	esac
done

# Every target must return the full body for every size before anything is measured.
for s in "${SIZE_LIST[@]}"; do
	want=$(size_bytes "$s")
	for t in "${TARGET_LIST[@]}"; do
		got=$(curl -s --max-time 5 "http://${ADDR[$t]}/$s" | wc -c)
		[[ $got == "$want" ]] || die "$t: GET /$s returned $got bytes, want $want"
	done
done
log "all targets up: ${TARGET_LIST[*]}"

# ---- measure ----
# run_wrk OUTFILE ARGS...: wrk on the load core. Run in the background and waited for, so that a signal
# to this script is handled at once (bash defers traps while a foreground command runs).
WRK_PID=
run_wrk() {
	local out=$1 rc=0
	shift
	taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" "$@" >"$out" 2>&1 </dev/null &
	WRK_PID=$!
	wait "$WRK_PID" || rc=$?
	WRK_PID=
	return "$rc"
}
# cpu_snap N: "busy total" jiffies of core N from /proc/stat (busy: user nice system irq softirq).
cpu_snap() { awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
# proc_ticks PID: user+system clock ticks of PID and its direct children (nginx's worker).
proc_ticks() {
	local p sum=0 t
	for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
		t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)
		sum=$((sum + t))
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

RES=$TMP/results
mkdir -p "$RES"
ntargets=${#TARGET_LIST[@]}
total=$((ROUNDS * ${#SIZE_LIST[@]} * ntargets))
log "measuring: ROUNDS=$ROUNDS DURATION=${DURATION}s WARMUP=${WARMUP}s SIZES='$SIZES' wrk -t1 -c$CONNS ($total runs, ~$((total * (DURATION + WARMUP + 1)))s)"
run=0
for ((r = 1; r <= ROUNDS; r++)); do
	for s in "${SIZE_LIST[@]}"; do
		for ((k = 0; k < ntargets; k++)); do
			t=${TARGET_LIST[(k + r - 1) % ntargets]}
			url="http://${ADDR[$t]}/$s"
			run=$((run + 1))
			f=$RES/$s.$t.$r.txt
			for ((try = 0; ; try++)); do
				pre=$(wait_idle)
				run_wrk /dev/null -d"${WARMUP}s" "$url" || true
				cpu0=$(cpu_snap "$PROXY_CPU") cpu1=$(cpu_snap "$LOAD_CPU")
				tp=${TPID[$t]} ticks=$(proc_ticks "${TPID[$t]}") t0=$(date +%s.%N)
				if ! run_wrk "$f" -d"${DURATION}s" --latency "$url"; then
					cat "$f" >&2
					die "wrk failed against $t ($url)"
				fi
				busy0=$(cpu_busy "$cpu0" "$(cpu_snap "$PROXY_CPU")") busy1=$(cpu_busy "$cpu1" "$(cpu_snap "$LOAD_CPU")")
				own=$(awk -v a="$ticks" -v b="$(proc_ticks "$tp")" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$(date +%s.%N)" \
					'BEGIN { printf "%d", 100 * (b - a) / hz / (t1 - t0) + 0.5 }')
				post=$(machine_busy)
				rps=$(awk '/^Requests\/sec:/ {print $2}' "$f")
				noisy=$((pre > IDLE_MAX || post > IDLE_MAX))
				log "[$run/$total] round $r  $(printf '%-4s %-10s %9s req/s   %s CPU %3s%%  core %s busy %3s%%  core %s busy %3s%%%s' \
					"$s" "$t" "${rps:-?}" "$([[ $t == noproxy ]] && echo origin || echo proxy)" "$own" "$PROXY_CPU" "$busy0" "$LOAD_CPU" "$busy1" \
					"$( ((noisy)) && echo "  (other load on the machine: ${pre}% before, ${post}% after)")")"
				if ((noisy && try < RETRIES)); then
					log "    measuring it again (retry $((try + 1))/$RETRIES)"
					continue
				fi
				break
			done
			echo "$busy0 $busy1 $own $pre $post" >"$RES/$s.$t.$r.cpu"
		done
	done
done

# ---- report ----
# wrk latency ("812.00us", "1.23ms", "1.02s", "1.5m") -> milliseconds
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
		printf "%.3f", n }'
}
median() { # numbers on stdin
	sort -g | awk '{a[NR] = $1} END { if (NR == 0) { print ""; exit }
		if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
fmt_k() { awk -v v="$1" 'BEGIN { printf "%.1fk", v / 1000 }'; }
fmt_ms() { awk -v v="$1" 'BEGIN { if (v < 10) printf "%.2f ms", v; else printf "%.1f ms", v }'; }
join() { # SEP ITEMS...
	local sep=$1 out="" x
	shift
	for x in "$@"; do out+="${out:+$sep}$x"; done
	echo "$out"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }

declare -A MED=() EFF=()
REPORT=$TMP/report.md
{
	echo "## Fleetgate benchmark"
	echo
	echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sr), $ncpu cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo '?'))."
	echo "fleetgate $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- dataplane 2>/dev/null || echo ' (+ uncommitted dataplane changes)'), $(go version | awk '{print $3}'), $(nginx -v 2>&1 | sed 's/.*: //'), haproxy $(haproxy -v | awk 'NR==1 {print $3}'), caddy $(caddy version | awk '{print $1}'), $(wrk -v 2>&1 | awk 'NR==1 {print $1, $2}')."
	echo "Each proxy pinned to core $PROXY_CPU with one worker; origin (GOMAXPROCS=1) and \`wrk -t1 -c$CONNS -d${DURATION}s --latency\` on core $LOAD_CPU; ${WARMUP}s warm-up before each run; $ROUNDS round(s), targets interleaved."
	for s in "${SIZE_LIST[@]}"; do
		for t in "${TARGET_LIST[@]}"; do
			MED[$s.$t]=$(for ((r = 1; r <= ROUNDS; r++)); do awk '/^Requests\/sec:/ {print $2}' "$RES/$s.$t.$r.txt"; done | median)
			# req/s per core of the proxy's own CPU, per round, median: the rig's ceiling hides a proxy's
			# headroom when it does not fill its core.
			EFF[$s.$t]=$(for ((r = 1; r <= ROUNDS; r++)); do
				awk -v rps="$(awk '/^Requests\/sec:/ {print $2}' "$RES/$s.$t.$r.txt")" '{ if ($3 > 0) print rps * 100 / $3 }' "$RES/$s.$t.$r.cpu"
			done | median)
		done
		fg=${MED[$s.fleetgate]:-}
		echo
		echo "### /$s: $(size_bytes "$s")-byte responses"
		echo
		echo "| target | req/s per round | median req/s | p50 | p99 | Fleetgate ratio | proxy CPU | req/s per proxy CPU | Fleetgate ratio per CPU | core $PROXY_CPU / $LOAD_CPU busy |"
		echo "|---|---|---|---|---|---|---|---|---|---|"
		footnotes=()
		for t in "${TARGET_LIST[@]}"; do
			rounds=() p50s=() p99s=() notes=()
			for ((r = 1; r <= ROUNDS; r++)); do
				f=$RES/$s.$t.$r.txt
				rounds+=("$(fmt_k "$(awk '/^Requests\/sec:/ {print $2}' "$f")")")
				p50s+=("$(to_ms "$(awk '$1 == "50%" {print $2}' "$f")")")
				p99s+=("$(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")")
				non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$f")
				[[ -n $non2xx ]] && notes+=("round $r: $non2xx non-2xx")
				sockerr=$(awk '/Socket errors:/ {sub(/.*Socket errors: /, ""); print}' "$f")
				[[ -n $sockerr ]] && notes+=("round $r socket errors: $sockerr")
			done
			b0=$(for ((r = 1; r <= ROUNDS; r++)); do awk '{print $1}' "$RES/$s.$t.$r.cpu"; done | median)
			b1=$(for ((r = 1; r <= ROUNDS; r++)); do awk '{print $2}' "$RES/$s.$t.$r.cpu"; done | median)
			own=$(for ((r = 1; r <= ROUNDS; r++)); do awk '{print $3}' "$RES/$s.$t.$r.cpu"; done | median)
			if [[ $t == noproxy ]]; then
				own=- eff=- rte=-
			else
				own="${own%.*}%" eff=$(fmt_k "${EFF[$s.$t]}")
				if [[ -n $fg ]]; then rte=$(ratio "${EFF[$s.fleetgate]}" "${EFF[$s.$t]}"); else rte=-; fi
			fi
			for ((r = 1; r <= ROUNDS; r++)); do
				read -r _ _ _ pre post <"$RES/$s.$t.$r.cpu"
				((pre > IDLE_MAX || post > IDLE_MAX)) && notes+=("round $r ran while something else loaded the machine (a core ${pre}% busy before, ${post}% after)")
			done
			p50=$(printf '%s\n' "${p50s[@]}" | median)
			p99=$(printf '%s\n' "${p99s[@]}" | median)
			if [[ -n $fg ]]; then rt=$(ratio "$fg" "${MED[$s.$t]}"); else rt=-; fi
			name=${LABEL[$t]}
			if ((${#notes[@]})); then
				name="$name ⚠"
				for n in "${notes[@]}"; do footnotes+=("- ⚠ ${LABEL[$t]}: $n"); done
			fi
			echo "| $name | $(join " / " "${rounds[@]}") | $(fmt_k "${MED[$s.$t]}") | $(fmt_ms "$p50") | $(fmt_ms "$p99") | $rt | $own | $eff | $rte | ${b0%.*}% / ${b1%.*}% |"
		done
		if ((${#footnotes[@]})); then
			echo
			printf '%s\n' "${footnotes[@]}"
		fi
	done
	if has_target fleetgate; then
		echo
		echo "Fleetgate median req/s over each peer's ($(join ", " "${SIZE_LIST[@]}") bytes):"
		echo
		echo '```'
		for t in "${TARGET_LIST[@]}"; do
			[[ $t == fleetgate ]] && continue
			parts=() eparts=()
			for s in "${SIZE_LIST[@]}"; do
				parts+=("$(ratio "${MED[$s.fleetgate]}" "${MED[$s.$t]}") ($s)")
				[[ $t == noproxy ]] || eparts+=("$(ratio "${EFF[$s.fleetgate]}" "${EFF[$s.$t]}") ($s)")
			done
			line="fleetgate/${SHORT[$t]} = $(join ", " "${parts[@]}")"
			((${#eparts[@]})) && line="$line   per proxy CPU: $(join ", " "${eparts[@]}")"
			echo "$line"
		done
		echo '```'
	fi
	cat <<EOF

- proxy CPU: the proxy's own processes' CPU time during the run (100% = one core).
- req/s per proxy CPU: each round's req/s divided by that share, median over rounds: an estimate of what
  one full core would carry. It matters when a proxy does not fill its core: then the rig (core $LOAD_CPU,
  wrk and the origin) capped its req/s, not the proxy, and the plain ratio flatters the slower proxy.
- core busy: share of each core outside idle, kernel work included. A core much busier than the
  processes on it account for points at other load on the machine.
EOF
} >"$REPORT"

echo
cat "$REPORT"
if [[ -n $OUT ]]; then
	cp "$REPORT" "$OUT"
	log "report written to $OUT"
fi
