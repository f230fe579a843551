#!/usr/bin/env bash
# Control-plane scale bench: N simulated data-plane workers (real gRPC Connect streams) against a
# control plane with an embedded etcd that the bench starts itself (temp dir, free loopback ports),
# measuring config push latency, backend-health convergence and transition latency, BackendHealth
# call latency, steady-state etcd writes and the control plane's CPU and memory.
# See scripts/bench/controlplane/main.go.
#
# TLS: by default the control plane runs with --insecure and the simulated workers and the bench's
# operator calls are plaintext, so the figures are the control plane's own work: the costs of TLS
# (handshakes, record encryption of every push, heartbeat and BackendHealth answer) are NOT measured.
# --tls measures them: the bench makes a PKI with `controlplane certs init` and everything is TLS with
# client certificates, as in production.
#
# By default it runs 1,000 workers against configs of 10, 1,000 and 10,000 servers, first on one
# control plane, then on two replicas sharing the etcd (workers split evenly between them,
# BackendHealth asked of the first), each run with a fresh control plane, and prints a table per run
# and a summary per mode; then the prober bench (scripts/bench/prober: one worker's health checker
# probing 10,000 loopback servers every second). At most 1,000,000 worker views of servers are loaded
# (with 10,000 servers, 100 of the 1,000 workers report health).
#
# Usage: scripts/bench-controlplane.sh [--quick] [--perf] [--tls] [--no-replicas] [--no-prober] [-- extra bench flags]
#   --quick      100 workers x 10 and 100 servers, 5 rounds, 5 s steady state, small prober (smoke test)
#   --no-replicas  skip the two-replica runs
#   --no-prober    skip the prober bench
#   --perf       record the control plane with `perf record` per phase and print its hottest symbols
#   --tls        TLS with client certificates everywhere (default: plaintext, --insecure)
# Environment knobs:
#   WORKERS      simulated workers (default 1000)
#   SERVERS      backend servers in the gateway's pool, comma-separated sizes (default 10,1000,10000)
#   REPLICAS     replica counts to run, comma-separated (default 1,2; --no-replicas: 1)
#   PROBE_SERVERS, PROBE_DURATION  prober bench: servers and seconds (default 10000, 20s)
#   ROUNDS       config pushes and health flips measured (default 20)
#   STEADY       steady-state window (default 20s)
#   CP_LOG_LEVEL control plane --log-level (default info)
#   CONTROLPLANE address of an already running control plane instead (then ETCD=URL to count writes);
#                plaintext (run it with --insecure), or with --tls and PKI_DIR=DIR (its ca.crt,
#                admin.crt/.key and dataplane.crt/.key, e.g. the control plane's DATA-DIR/pki)
#   HEAP_PROFILE_DIR=DIR  run the control plane with --pprof-address and save its heap profile there
#                once every health view is loaded (heap-SERVERS-rN.pb.gz; go tool pprof -top FILE)
#   SKIP_BUILD=1 use bin/controlplane as it is
#   OUT=FILE     also write the markdown report to FILE
# Only loopback addresses are used; backend server addresses are configuration, never dialled.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

QUICK=0
PERF=0
TLS=0
NOREPLICAS=0
NOPROBER=0
EXTRA=()
while (($#)); do
	case "$1" in
	--quick) QUICK=1 ;;
	--perf) PERF=1 ;;
	--tls) TLS=1 ;;
	--no-replicas) NOREPLICAS=1 ;;
	--no-prober) NOPROBER=1 ;;
	-h | --help) usage; exit 0 ;;
	--) shift; EXTRA=("$@"); break ;;
	*) echo "bench-controlplane: unknown argument: $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
if [[ $QUICK == 1 ]]; then
	WORKERS=${WORKERS:-100}
	SERVERS=${SERVERS:-10,100}
	PROBE_SERVERS=${PROBE_SERVERS:-1000}
	PROBE_DURATION=${PROBE_DURATION:-5s}
	ROUNDS=${ROUNDS:-5}
	STEADY=${STEADY:-5s}
fi
WORKERS=${WORKERS:-1000}
SERVERS=${SERVERS:-10,1000,10000}
if [[ $NOREPLICAS == 1 ]]; then REPLICAS=${REPLICAS:-1}; fi
REPLICAS=${REPLICAS:-1,2}
PROBE_SERVERS=${PROBE_SERVERS:-10000}
PROBE_DURATION=${PROBE_DURATION:-20s}
ROUNDS=${ROUNDS:-20}
STEADY=${STEADY:-20s}
CP_LOG_LEVEL=${CP_LOG_LEVEL:-info}
CONTROLPLANE=${CONTROLPLANE:-}
ETCD=${ETCD:-}
PKI_DIR=${PKI_DIR:-}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-}
HEAP_PROFILE_DIR=${HEAP_PROFILE_DIR:-}

cd "$(dirname "$0")/.."
GO=${GO:-go}
TMP=$(mktemp -d -t fleetgate-bench-controlplane.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

if [[ $SKIP_BUILD != 1 ]]; then
	echo "building bin/controlplane and the bench" >&2
	"$GO" build -o bin/ ./controlplane/cmd/controlplane
fi
"$GO" build -o "$TMP/controlplane-bench" ./scripts/bench/controlplane
[[ $NOPROBER == 1 ]] || "$GO" build -o "$TMP/prober-bench" ./scripts/bench/prober

args=(--workers "$WORKERS" --servers "$SERVERS" --rounds "$ROUNDS" --steady "$STEADY"
	--cp-bin bin/controlplane --cp-log-level "$CP_LOG_LEVEL")
[[ -n $CONTROLPLANE ]] && args+=(--controlplane "$CONTROLPLANE")
[[ -n $ETCD ]] && args+=(--etcd "$ETCD")
[[ $TLS == 1 ]] && args+=(--tls)
[[ -n $PKI_DIR ]] && args+=(--pki-dir "$PKI_DIR")
[[ -n $HEAP_PROFILE_DIR ]] && args+=(--heap-profile-dir "$HEAP_PROFILE_DIR")
if [[ $PERF == 1 ]]; then
	command -v perf >/dev/null || { echo "bench-controlplane: --perf needs perf installed" >&2; exit 2; }
	args+=(--perf-dir "$TMP/perf")
fi

[[ -n $OUT ]] && : >"$OUT"
emit() { if [[ -n $OUT ]]; then tee -a "$OUT"; else cat; fi; }
status=0
IFS=, read -r -a replica_counts <<<"$REPLICAS"
for n in "${replica_counts[@]}"; do
	if [[ $n != 1 && -n $CONTROLPLANE ]]; then
		echo "bench-controlplane: an external control plane is one replica; skipping --replicas $n" >&2
		continue
	fi
	echo "running: controlplane-bench ${args[*]} --replicas $n ${EXTRA[*]:-}" >&2
	"$TMP/controlplane-bench" "${args[@]}" --replicas "$n" "${EXTRA[@]}" | emit || status=1
done
if [[ $NOPROBER != 1 ]]; then
	echo "running: prober-bench --servers $PROBE_SERVERS --duration $PROBE_DURATION" >&2
	"$TMP/prober-bench" --servers "$PROBE_SERVERS" --duration "$PROBE_DURATION" | emit || status=1
fi
exit $status
