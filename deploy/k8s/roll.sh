#!/usr/bin/env bash
# A zone-safe rolling restart or upgrade of the storage StatefulSets:
# apply the new manifests first (`helm upgrade`, or kubectl apply of
# dynaraft.yaml; storage StatefulSets are OnDelete, so nothing restarts by
# itself), then run this. It deletes one storage pod at a time, zone after
# zone (StatefulSet by StatefulSet, in name order), and waits until the
# replacement is Ready (its /ready: caught up and serving) before the next,
# so every Raft group keeps all but one of its replicas throughout. A
# stopping node hands its leaderships off first (SIGTERM), so no group
# waits out an election.
#
#   deploy/k8s/roll.sh [namespace] [timeout] [release]
#
# The same procedure runs against a local cluster in `make test`
# (tests/scripts/rolling_restart.py); this script has not been run against
# a real Kubernetes cluster yet.
set -euo pipefail
NS="${1:-dynaraft}"
TIMEOUT="${2:-600s}"
RELEASE="${3:-}"
selector="app.kubernetes.io/component=storage${RELEASE:+,app.kubernetes.io/instance=$RELEASE}"
zones=$(kubectl -n "$NS" get statefulsets -l "$selector" \
  -o jsonpath='{range .items[*]}{.metadata.labels.dynaraft\.io/zone}{"\n"}{end}' | sort)
[ -n "$zones" ] || { echo "no storage StatefulSets in namespace $NS" >&2; exit 1; }
for zone in $zones; do
  pods=$(kubectl -n "$NS" get pods -l "$selector,dynaraft.io/zone=$zone" \
    -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort)
  for pod in $pods; do
    echo "restarting $pod ($zone)"
    kubectl -n "$NS" delete pod "$pod" --wait=true
    # The StatefulSet makes the pod again under the same name.
    until kubectl -n "$NS" get pod "$pod" >/dev/null 2>&1; do sleep 1; done
    kubectl -n "$NS" wait --for=condition=Ready "pod/$pod" --timeout="$TIMEOUT"
  done
done
echo "every storage pod restarted, one at a time, each ready before the next"
