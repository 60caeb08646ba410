#!/usr/bin/env bash
# The whole ttg demo on a local Kind cluster: create the cluster ttg-sandbox if missing,
# build and load the worker image, deploy a broker, run a queue-mode sweep as a Job, and
# print its aggregate from a pod in the cluster. Run k8s/run-demo.sh --help for the flags.
#
# Every kind/docker/kubectl command goes through `run` (or `capture`), so --dry-run prints
# each one, one per line prefixed "+ ", instead of running it: it needs none of those tools.
# Commands go to stdout; what the script is doing goes to stderr as "==> ..." lines.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CLUSTER=ttg-sandbox
CONTEXT="${TTG_KUBE_CONTEXT:-kind-$CLUSTER}"
# The image tag is the package version, read from package.json (one place to change it).
VERSION="$(sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' package.json | head -n 1)"
IMAGE="ttg-worker:${VERSION}"
WORKER_LABELS="app.kubernetes.io/name=ttg-worker,ttg.io/mode=queue"

usage() {
  cat <<'EOF'
usage: k8s/run-demo.sh [flags]

Runs a ttg sweep on the Kind cluster ttg-sandbox (created from k8s/kind-config.yaml when
missing): builds and loads the ttg-worker image, deploys the broker, runs the queue-mode
worker Job, waits for it, and prints the aggregate from a pod in the cluster.

  --backend redis|rabbitmq   queue backend (default redis)
  --scale small|medium|large 10 thousand / 1 million / 100 million parameters (default small)
  --workers N                worker pods: the Job's parallelism and completions (default 3)
  --kernel NAME              placeholder or mandelbrot (default placeholder)
  --fault-demo               when 30% of the chunks have results, kill one worker pod with
                             SIGKILL, then show the survivors' FAULT RECOVERY log lines
  --monitor cli|web|both     live progress: `ttg monitor` in a pod (cli), or its web page
                             port-forwarded to http://localhost:8080 (web)
  --dry-run                  print every kind/docker/kubectl command instead of running it
  -h, --help                 this help

Clean up with k8s/cleanup.sh (--all also deletes the cluster).
EOF
}

# Usage errors: one line, exit 2, before anything runs.
usage_error() {
  echo "run-demo.sh: $1 (see --help)" >&2
  exit 2
}

BACKEND=redis
SCALE=small
WORKERS=3
KERNEL=placeholder
FAULT_DEMO=false
MONITOR=none
DRY_RUN=false

while (($# > 0)); do
  flag="$1"
  has_value=false
  value=""
  if [[ "$flag" == --*=* ]]; then
    value="${flag#*=}"
    flag="${flag%%=*}"
    has_value=true
  fi
  case "$flag" in
    --backend | --scale | --workers | --kernel | --monitor)
      if ! $has_value; then
        if (($# < 2)) || [[ "$2" == --* ]]; then usage_error "$flag needs a value"; fi
        value="$2"
        shift
      fi
      case "$flag" in
        --backend) BACKEND="$value" ;;
        --scale) SCALE="$value" ;;
        --workers) WORKERS="$value" ;;
        --kernel) KERNEL="$value" ;;
        --monitor) MONITOR="$value" ;;
      esac
      ;;
    --fault-demo | --dry-run | --help | -h)
      if $has_value; then usage_error "$flag takes no value"; fi
      case "$flag" in
        --fault-demo) FAULT_DEMO=true ;;
        --dry-run) DRY_RUN=true ;;
        *) usage; exit 0 ;;
      esac
      ;;
    *) usage_error "unknown argument \"$1\"" ;;
  esac
  shift
done

case "$BACKEND" in
  redis | rabbitmq) ;;
  *) usage_error "--backend must be redis or rabbitmq, got \"$BACKEND\"" ;;
esac
# Chunk sizes: ~100 chunks for the small and medium sweeps (enough to watch progress and a
# fault), 1000 for the large one, so that no chunk takes more than a fraction of a second
# even for mandelbrot and a SIGTERM'd pod finishes its chunks well within its grace period.
case "$SCALE" in
  small) TOTAL_PARAMS=10000 CHUNK_SIZE=100 WAIT_SECONDS=600 ;;
  medium) TOTAL_PARAMS=1000000 CHUNK_SIZE=10000 WAIT_SECONDS=1800 ;;
  large) TOTAL_PARAMS=100000000 CHUNK_SIZE=100000 WAIT_SECONDS=14400 ;;
  *) usage_error "--scale must be small, medium or large, got \"$SCALE\"" ;;
esac
if ! [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || ((WORKERS > 100)); then
  usage_error "--workers must be an integer from 1 to 100, got \"$WORKERS\""
fi
case "$KERNEL" in
  placeholder | mandelbrot) ;;
  *) usage_error "--kernel must be placeholder or mandelbrot, got \"$KERNEL\"" ;;
esac
case "$MONITOR" in
  none | cli | web | both) ;;
  *) usage_error "--monitor must be cli, web or both, got \"$MONITOR\"" ;;
esac
if [[ -z "$VERSION" ]]; then
  echo "run-demo.sh: cannot read the version from $ROOT/package.json" >&2
  exit 1
fi

# --- running commands ---------------------------------------------------------------

# say, quote, show and run (printed instead under --dry-run): shared with cleanup.sh.
# shellcheck source=k8s/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# capture PLACEHOLDER CMD...: the command's stdout; under --dry-run the command is printed
# and PLACEHOLDER stands in for its output.
capture() {
  local placeholder="$1"
  shift
  if $DRY_RUN; then
    show "$@"
    printf '%s' "$placeholder"
  else
    "$@"
  fi
}

kube() { run kubectl --context "$CONTEXT" "$@"; }

# Applies a manifest with a JSON merge patch (per-run settings). The patch is made offline
# (kubectl patch --local), so the file in the repository stays the reference.
apply_patched() {
  local file="$1" patch="$2"
  if $DRY_RUN; then
    printf '%s | %s\n' "$(show kubectl patch --local -f "$file" --type merge -p "$patch" -o yaml 3>&1)" \
      "$(show kubectl --context "$CONTEXT" apply -f - 3>&1 | sed 's/^+ //')" >&3
  else
    kubectl patch --local -f "$file" --type merge -p "$patch" -o yaml | kubectl --context "$CONTEXT" apply -f -
  fi
}

# `ttg <args>` in the toolbox pod, against this run's backend.
ttg_in_cluster() {
  kube exec ttg-toolbox -- env "QUEUE_BACKEND=$BACKEND" node dist/engine/cli.js "$@"
}

BACKGROUND_PIDS=()
stop_background() {
  local pid
  for pid in "${BACKGROUND_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap stop_background EXIT

# Starts a long-running command in the background (monitor, port-forward).
background() {
  if $DRY_RUN; then
    printf '%s &\n' "$(show "$@" 3>&1)" >&3
  else
    "$@" &
    BACKGROUND_PIDS+=("$!")
  fi
}

if ! $DRY_RUN; then
  for tool in kind docker kubectl; do
    command -v "$tool" >/dev/null || { echo "run-demo.sh: $tool is not installed (needed for the Kind demo; --dry-run shows the commands)" >&2; exit 1; }
  done
fi

TOTAL_CHUNKS=$(((TOTAL_PARAMS + CHUNK_SIZE - 1) / CHUNK_SIZE))
say "sweep: $TOTAL_PARAMS params of $KERNEL in $TOTAL_CHUNKS chunks of $CHUNK_SIZE, $WORKERS workers on $BACKEND (image $IMAGE)"

# --- cluster and image --------------------------------------------------------------

clusters="$(capture "" kind get clusters)"
if ! grep -qx "$CLUSTER" <<<"$clusters"; then
  say "creating the Kind cluster $CLUSTER"
  run kind create cluster --name "$CLUSTER" --config k8s/kind-config.yaml
fi
say "building $IMAGE and loading it into the cluster"
run docker build -f k8s/Dockerfile -t "$IMAGE" .
run kind load docker-image "$IMAGE" --name "$CLUSTER"

# --- configuration and broker ------------------------------------------------------

say "configuration and the $BACKEND broker"
kube apply -f k8s/secret.yaml
apply_patched k8s/configmap.yaml \
  "{\"data\":{\"TOTAL_PARAMS\":\"$TOTAL_PARAMS\",\"CHUNK_SIZE\":\"$CHUNK_SIZE\",\"KERNEL\":\"$KERNEL\",\"TOTAL_WORKERS\":\"$WORKERS\"}}"
kube apply -f "k8s/$BACKEND.yaml"

# The previous sweep on this backend: its Jobs (worker and aggregator) go first, then its
# queue state (ttg reset), so this run's settings never meet the last run's.
say "removing the previous sweep on $BACKEND"
kube delete job -l "app.kubernetes.io/part-of=ttg,ttg.io/queue-backend=$BACKEND" --ignore-not-found --cascade=foreground --wait=true
# The toolbox reads the ConfigMap when it starts: recreate it so it sees this run's.
kube delete pod ttg-toolbox --ignore-not-found --wait=true
kube apply -f k8s/toolbox.yaml
kube wait --for=condition=Ready "pod/ttg-$BACKEND" --timeout=300s
kube wait --for=condition=Ready pod/ttg-toolbox --timeout=300s
ttg_in_cluster reset

# --- the sweep ----------------------------------------------------------------------

say "starting $WORKERS worker pods (Job ttg-worker-$BACKEND)"
apply_patched "k8s/worker-queue-$BACKEND.yaml" "{\"spec\":{\"parallelism\":$WORKERS,\"completions\":$WORKERS}}"

if [[ "$MONITOR" == cli || "$MONITOR" == both ]]; then
  say "monitor: ttg monitor in the toolbox pod"
  background kubectl --context "$CONTEXT" exec ttg-toolbox -- env "QUEUE_BACKEND=$BACKEND" node dist/engine/cli.js monitor --interval 2
fi
if [[ "$MONITOR" == web || "$MONITOR" == both ]]; then
  say "monitor: web page at http://localhost:8080 (ttg monitor --web in the toolbox pod, port-forwarded)"
  background kubectl --context "$CONTEXT" exec ttg-toolbox -- env "QUEUE_BACKEND=$BACKEND" node dist/engine/cli.js monitor --web
  background kubectl --context "$CONTEXT" port-forward pod/ttg-toolbox 8080:8080
fi

if $FAULT_DEMO; then
  threshold=$(((TOTAL_CHUNKS * 30 + 99) / 100))
  say "fault demo: waiting until $threshold of $TOTAL_CHUNKS chunks have results"
  for ((attempt = 0; ; attempt++)); do
    report="$(capture '{"total_chunks":0}' kubectl --context "$CONTEXT" exec ttg-toolbox -- env "QUEUE_BACKEND=$BACKEND" node dist/engine/cli.js aggregate --json 2>/dev/null || true)"
    done_chunks="$(grep -o '"total_chunks":[0-9]*' <<<"$report" | cut -d: -f2 || true)"
    if $DRY_RUN || ((${done_chunks:-0} >= threshold)); then break; fi
    if ((attempt > WAIT_SECONDS)); then echo "run-demo.sh: the sweep never reached 30%" >&2; exit 1; fi
    sleep 1
  done
  victim="$(capture '<victim-pod>' kubectl --context "$CONTEXT" get pods -l "$WORKER_LABELS,ttg.io/queue-backend=$BACKEND" \
    --field-selector=status.phase=Running -o 'jsonpath={.items[0].metadata.name}')"
  node="$(capture '<node>' kubectl --context "$CONTEXT" get pod "$victim" -o 'jsonpath={.spec.nodeName}')"
  container="$(capture '<container-id>' kubectl --context "$CONTEXT" get pod "$victim" -o 'jsonpath={.status.containerStatuses[0].containerID}')"
  container="${container#*://}"
  # SIGKILL from the node, as the OOM killer or a crash would: no graceful stop, the chunks
  # in its hands are left pending. (`kubectl delete pod` would send SIGTERM first, and the
  # worker would finish its chunks; inside the container node is PID 1, which ignores a
  # SIGKILL sent from its own PID namespace.) The Job replaces the pod: exit 137 is ignored.
  say "fault demo: killing pod $victim (SIGKILL from node $node)"
  run docker exec "$node" sh -c "kill -KILL \$(crictl inspect --output go-template --template '{{.info.pid}}' $container)"
fi

say "waiting for the Job ttg-worker-$BACKEND to complete"
kube wait --for=condition=complete "job/ttg-worker-$BACKEND" --timeout="${WAIT_SECONDS}s"

if $FAULT_DEMO; then
  say "fault demo: the survivors' FAULT RECOVERY lines"
  if $DRY_RUN; then
    printf '%s | grep "FAULT RECOVERY"\n' "$(show kubectl --context "$CONTEXT" logs -l "$WORKER_LABELS,ttg.io/queue-backend=$BACKEND" --tail=-1 --prefix "--max-log-requests=$((WORKERS + 5))" 3>&1)" >&3
  else
    kubectl --context "$CONTEXT" logs -l "$WORKER_LABELS,ttg.io/queue-backend=$BACKEND" --tail=-1 --prefix "--max-log-requests=$((WORKERS + 5))" |
      grep "FAULT RECOVERY" || say "no FAULT RECOVERY line: the killed pod held no chunk at that moment"
  fi
fi

# --- the report ---------------------------------------------------------------------

say "aggregate (Job ttg-aggregate-$BACKEND)"
kube apply -f "k8s/aggregate-$BACKEND.yaml"
kube wait --for=condition=complete "job/ttg-aggregate-$BACKEND" --timeout=300s
kube logs "job/ttg-aggregate-$BACKEND"
ttg_in_cluster aggregate

say "done. Look around with:"
say "  kubectl get pods -l ttg.io/mode=queue"
if [[ "$BACKEND" == redis ]]; then
  say "  kubectl exec ttg-redis -- redis-cli XLEN ttg:results"
else
  say "  kubectl exec ttg-rabbitmq -- rabbitmqctl list_queues name messages messages_unacknowledged"
fi
say "  kubectl logs -l app.kubernetes.io/name=ttg-worker --tail=-1 | grep \"FAULT RECOVERY\""
say "clean up with k8s/cleanup.sh (--all also deletes the cluster)"
