#!/usr/bin/env bash
# Deletes ttg's resources from the Kind cluster ttg-sandbox, and nothing else: only objects
# labelled app.kubernetes.io/part-of=ttg (Jobs and their pods, the brokers, their volume
# claims, Services, the ConfigMap and Secret, KEDA objects when KEDA is installed).
# --all also deletes the Kind cluster. --dry-run prints the commands ("+ ..." lines).
set -euo pipefail

CLUSTER=ttg-sandbox
CONTEXT="${TTG_KUBE_CONTEXT:-kind-$CLUSTER}"
SELECTOR=app.kubernetes.io/part-of=ttg

usage() {
  cat <<'EOF'
usage: k8s/cleanup.sh [--all] [--dry-run]

Deletes every object labelled app.kubernetes.io/part-of=ttg from the cluster ttg-sandbox
(context kind-ttg-sandbox, or $TTG_KUBE_CONTEXT).

  --all       also delete the Kind cluster ttg-sandbox
  --dry-run   print the kind/kubectl commands instead of running them
  -h, --help  this help
EOF
}

ALL=false
DRY_RUN=false
for arg in "$@"; do
  case "$arg" in
    --all) ALL=true ;;
    --dry-run) DRY_RUN=true ;;
    -h | --help) usage; exit 0 ;;
    *) echo "cleanup.sh: unknown argument \"$arg\" (see --help)" >&2; exit 2 ;;
  esac
done

# say, quote, show and run (printed instead under --dry-run): shared with run-demo.sh.
# shellcheck source=k8s/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Succeeds when the command does; under --dry-run prints it and assumes it would.
check() {
  if $DRY_RUN; then show "$@"; else "$@" >/dev/null 2>&1; fi
}

if ! $DRY_RUN; then
  command -v kubectl >/dev/null || { echo "cleanup.sh: kubectl is not installed" >&2; exit 1; }
  if $ALL; then command -v kind >/dev/null || { echo "cleanup.sh: kind is not installed" >&2; exit 1; }; fi
fi

if check kubectl config get-contexts "$CONTEXT"; then
  say "deleting ttg's objects ($SELECTOR) in $CONTEXT"
  run kubectl --context "$CONTEXT" delete job,pod,service,configmap,secret,persistentvolumeclaim \
    -l "$SELECTOR" --ignore-not-found --wait=true
  # KEDA's kinds exist only where KEDA is installed.
  if check kubectl --context "$CONTEXT" get crd scaledjobs.keda.sh; then
    run kubectl --context "$CONTEXT" delete scaledjobs.keda.sh,triggerauthentications.keda.sh \
      -l "$SELECTOR" --ignore-not-found --wait=true
  fi
  # The PodMonitor (k8s/grafana), where prometheus-operator is installed.
  if check kubectl --context "$CONTEXT" get crd podmonitors.monitoring.coreos.com; then
    run kubectl --context "$CONTEXT" delete podmonitors.monitoring.coreos.com \
      -l "$SELECTOR" --ignore-not-found --wait=true
  fi
else
  say "no kubectl context $CONTEXT: no ttg objects to delete"
fi

if $ALL; then
  # Under --dry-run the cluster is assumed to exist.
  if $DRY_RUN; then clusters="$CLUSTER"; show kind get clusters; else clusters="$(kind get clusters 2>/dev/null || true)"; fi
  if grep -qx "$CLUSTER" <<<"$clusters"; then
    say "deleting the Kind cluster $CLUSTER"
    run kind delete cluster --name "$CLUSTER"
  else
    say "no Kind cluster $CLUSTER"
  fi
fi
