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
# Usage: scripts/bench-controlplane.sh [--quick] [--perf] [--tls] [-- extra bench flags]
#   --quick      100 workers x 100 servers, 5 rounds, 5 s steady state (smoke test)
#   --perf       record the control plane with `perf record` per phase and print its hottest symbols
#   --tls        TLS with client certificates everywhere (default: plaintext, --insecure)
# Environment knobs:
#   WORKERS      simulated workers (default 1000)
#   SERVERS      backend servers in the gateway's pool (default 1000)
#   ROUNDS       config pushes and health flips measured (default 20)
#   STEADY       steady-state window (default 20s)
#   CP_LOG_LEVEL control plane --log-level (default info)
#   CONTROLPLANE address of an already running control plane instead (then ETCD=URL to count writes);
#                plaintext (run it with --insecure), or with --tls and PKI_DIR=DIR (its ca.crt,
#                admin.crt/.key and dataplane.crt/.key, e.g. the control plane's DATA-DIR/pki)
#   SKIP_BUILD=1 use bin/controlplane as it is
#   OUT=FILE     also write the markdown report to FILE
# Only loopback addresses are used; backend server addresses are configuration, never dialled.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

QUICK=0
PERF=0
TLS=0
EXTRA=()
while (($#)); do
	case "$1" in
	--quick) QUICK=1 ;;
	--perf) PERF=1 ;;
	--tls) TLS=1 ;;
	-h | --help) usage; exit 0 ;;
	--) shift; EXTRA=("$@"); break ;;
	*) echo "bench-controlplane: unknown argument: $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
if [[ $QUICK == 1 ]]; then
	WORKERS=${WORKERS:-100}
	SERVERS=${SERVERS:-100}
	ROUNDS=${ROUNDS:-5}
	STEADY=${STEADY:-5s}
fi
WORKERS=${WORKERS:-1000}
SERVERS=${SERVERS:-1000}
ROUNDS=${ROUNDS:-20}
STEADY=${STEADY:-20s}
CP_LOG_LEVEL=${CP_LOG_LEVEL:-info}
CONTROLPLANE=${CONTROLPLANE:-}
ETCD=${ETCD:-}
PKI_DIR=${PKI_DIR:-}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-}

cd "$(dirname "$0")/.."
GO=${GO:-go}
TMP=$(mktemp -d -t fleetgate-bench-controlplane.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

if [[ $SKIP_BUILD != 1 ]]; then
	echo "building bin/controlplane and the bench" >&2
	"$GO" build -o bin/ ./controlplane/cmd/controlplane
fi
"$GO" build -o "$TMP/controlplane-bench" ./scripts/bench/controlplane

args=(--workers "$WORKERS" --servers "$SERVERS" --rounds "$ROUNDS" --steady "$STEADY"
	--cp-bin bin/controlplane --cp-log-level "$CP_LOG_LEVEL")
[[ -n $CONTROLPLANE ]] && args+=(--controlplane "$CONTROLPLANE")
[[ -n $ETCD ]] && args+=(--etcd "$ETCD")
[[ $TLS == 1 ]] && args+=(--tls)
[[ -n $PKI_DIR ]] && args+=(--pki-dir "$PKI_DIR")
if [[ $PERF == 1 ]]; then
	command -v perf >/dev/null || { echo "bench-controlplane: --perf needs perf installed" >&2; exit 2; }
	args+=(--perf-dir "$TMP/perf")
fi

echo "running: controlplane-bench ${args[*]} ${EXTRA[*]:-}" >&2
if [[ -n $OUT ]]; then
	"$TMP/controlplane-bench" "${args[@]}" "${EXTRA[@]}" | tee "$OUT"
else
	"$TMP/controlplane-bench" "${args[@]}" "${EXTRA[@]}"
fi
