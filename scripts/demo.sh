#!/usr/bin/env bash
# make demo: the real thing on one machine. A control plane on embedded etcd, two sample backends,
# two data-plane workers on their own loopback addresses, a sample gateway applied with gatewayctl,
# traffic through both workers, then the fleet and backend health as gatewayctl shows them. Every gRPC
# connection is TLS: the control plane makes its PKI in its data dir on first start, and the workers
# and gatewayctl use its certificates (--pki-dir, $GATEWAYCTL_PKI_DIR).
#
# Interactive terminal: the fleet keeps running until Ctrl-C. Otherwise (CI, pipes) it stops at the end;
# DEMO_KEEP=1 keeps it running either way.
set -euo pipefail
cd "$(dirname "$0")/.."

CP=${DEMO_CONTROLPLANE:-127.0.0.1:7070}
ETCD_CLIENT=${DEMO_ETCD_CLIENT:-127.0.0.1:2379}
ETCD_PEER=${DEMO_ETCD_PEER:-127.0.0.1:2380}
WORK=$(mktemp -d -t fleetgate-demo-XXXXXX)
PKI=$WORK/controlplane/pki   # made by the control plane on first start
export GATEWAYCTL_PKI_DIR=$PKI
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
ctl() { echo "\$ gatewayctl $*"; bin/gatewayctl --server "$CP" "$@"; }

# Wait until a command succeeds (bounded).
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 150); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "demo: $what did not come up; logs in $WORK:" >&2
  tail -n 20 "$WORK"/*.log >&2 || true
  exit 1
}

say "Building"
make --no-print-directory build
go build -o "$WORK/backend" ./scripts/demo/backend

say "Starting the control plane on $CP (embedded etcd on $ETCD_CLIENT, TLS from its PKI in $PKI)"
bin/controlplane --listen "$CP" --data-dir "$WORK/controlplane" --metrics-address 127.0.0.1:9090 \
  --etcd-client-addr "$ETCD_CLIENT" --etcd-peer-addr "$ETCD_PEER" >"$WORK/controlplane.log" 2>&1 &
PIDS+=($!)
wait_for "control plane" bin/gatewayctl --server "$CP" list

say "Starting two sample backends: 127.0.0.10:9001 (alpha) and 127.0.0.11:9001 (beta)"
"$WORK/backend" --listen 127.0.0.10:9001 --name alpha >"$WORK/backend-alpha.log" 2>&1 &
PIDS+=($!)
"$WORK/backend" --listen 127.0.0.11:9001 --name beta >"$WORK/backend-beta.log" 2>&1 &
BETA=$!
PIDS+=($BETA)

say "Starting two data-plane workers: dp-1 on 127.0.0.2, dp-2 on 127.0.0.3"
for i in 1 2; do
  bin/dataplane --controlplane "$CP" --gateway appgw1 --id "dp-$i" --bind-address "127.0.0.$((i + 1))" \
    --state-dir "$WORK/dp-$i" --admin-address "127.0.0.$((i + 1)):9901" --pki-dir "$PKI" >"$WORK/dp-$i.log" 2>&1 &
  PIDS+=($!)
done

say "Applying the sample gateway (scripts/demo/appgw1.yaml)"
ctl apply -f scripts/demo/appgw1.yaml
wait_for "worker dp-1" curl -fsS http://127.0.0.2:8080/
wait_for "worker dp-2" curl -fsS http://127.0.0.3:8080/

say "Traffic through both workers (round-robin across the pool)"
for ip in 127.0.0.2 127.0.0.3; do
  for _ in 1 2; do
    echo "\$ curl http://$ip:8080/hello"
    curl -sS "http://$ip:8080/hello"
  done
done
echo "\$ curl -H 'Host: api.example.com' http://127.0.0.2:8081/images/cat.png"
curl -sS -H 'Host: api.example.com' http://127.0.0.2:8081/images/cat.png
echo "\$ curl -H 'Host: other.example.com' http://127.0.0.2:8081/   (no listener for that host)"
curl -sS -H 'Host: other.example.com' http://127.0.0.2:8081/

say "Workers are ready once they serve a config (admin endpoint: /healthz, /readyz, /metrics)"
echo "\$ curl http://127.0.0.2:9901/readyz"
curl -sS http://127.0.0.2:9901/readyz
echo "\$ curl -s http://127.0.0.2:9901/metrics | grep '^fleetgate_requests_total'"
curl -s http://127.0.0.2:9901/metrics | grep '^fleetgate_requests_total' || true

say "The fleet"
ctl list
ctl dataplanes appgw1
say "Backend health (every worker probes every server; the control plane aggregates)"
wait_for "healthy backends" bin/gatewayctl --server "$CP" backend-health appgw1
ctl backend-health appgw1

say "Stopping backend beta: the workers see it fail and stop sending it traffic"
kill "$BETA"
for _ in $(seq 1 50); do
  bin/gatewayctl --server "$CP" backend-health appgw1 --pool pool1 -o json 2>/dev/null | grep -q '"Unhealthy"' && break
  sleep 0.2
done
ctl backend-health appgw1 || true
for _ in 1 2; do
  echo "\$ curl http://127.0.0.2:8080/hello"
  curl -sS "http://127.0.0.2:8080/hello"
done
echo "\$ curl -H 'Host: api.example.com' http://127.0.0.2:8081/images/cat.png   (its only server is down)"
curl -sS -H 'Host: api.example.com' http://127.0.0.2:8081/images/cat.png
ctl probe --gateway appgw1 --settings settings1 --address 127.0.0.11 || true
ctl backend-health history 127.0.0.11:9001 --gateway appgw1

if [[ "${DEMO_KEEP:-}" == 1 || -t 0 ]]; then
  say "The fleet is running. Try, in another terminal:"
  cat <<EOT
  export GATEWAYCTL_PKI_DIR=$PKI     # gatewayctl's admin certificate (or --pki-dir)
  bin/gatewayctl --server $CP get appgw1 -o yaml
  bin/gatewayctl --server $CP dataplanes appgw1
  bin/gatewayctl --server $CP backend-health appgw1
  curl http://127.0.0.2:8080/        # worker dp-1
  curl http://127.0.0.3:8080/        # worker dp-2
  Scale out: bin/dataplane --controlplane $CP --gateway appgw1 --id dp-3 --bind-address 127.0.0.4 --pki-dir $PKI &
  Drain a server: bin/gatewayctl --server $CP drain --gateway appgw1 --pool pool1 --address 127.0.0.10
  Metrics: curl http://127.0.0.2:9901/metrics ; curl http://127.0.0.1:9090/metrics
  Logs: $WORK/*.log
Ctrl-C stops everything.
EOT
  while true; do sleep 3600; done
fi
say "Demo done; stopping the fleet"
echo "(To keep it running, run 'make demo' in a terminal or with DEMO_KEEP=1: it then prints how to"
echo " scale out, drain a server and read metrics against the running fleet.)"
