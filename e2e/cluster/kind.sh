#!/usr/bin/env bash
# Sluice on a local kind cluster, end to end (docs/quickstart.md, part 2):
# build both images, load them into kind, install the chart, apply the
# single-node sample Ingester, write a line of line protocol and query it
# back through the ingester's client Service.
#
#   e2e/cluster/kind.sh            # cluster "sluice" (created if missing)
#   KIND_CLUSTER=dev e2e/cluster/kind.sh
#   e2e/cluster/kind.sh --delete   # remove the cluster afterwards
#
# Needs docker, kind, kubectl and helm. Cannot run in CI here (no Docker);
# operator/tests/chart.rs checks that the image names and targets it uses
# match the Dockerfile and the chart.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER=${KIND_CLUSTER:-sluice}
RELEASE_NS=sluice-system
# The images are tagged with the chart's appVersion, so neither the chart nor
# the sample Ingester needs an image override.
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$ROOT/charts/sluice/Chart.yaml")
OPERATOR_IMAGE=ghcr.io/sluice-dev/sluice-operator:$VERSION
INGESTER_IMAGE=ghcr.io/sluice-dev/sluice-ingester:$VERSION

for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "kind.sh: $tool is not installed" >&2; exit 1; }
done
step() { printf '\n==> %s\n' "$*"; }

step "kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "build $OPERATOR_IMAGE and $INGESTER_IMAGE"
docker build --target operator -t "$OPERATOR_IMAGE" "$ROOT"
docker build --target ingester -t "$INGESTER_IMAGE" "$ROOT"
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$INGESTER_IMAGE"

step "install the chart (operator + CRD)"
helm upgrade --install sluice "$ROOT/charts/sluice" \
    --namespace "$RELEASE_NS" --create-namespace --wait --timeout 5m
helm test sluice --namespace "$RELEASE_NS" --logs

step "apply the single-node sample Ingester"
kubectl apply -f "$ROOT/operator/examples/single-node.yaml"
kubectl -n default wait ingester/dev --for=jsonpath='{.status.phase}'=Ready --timeout=5m
kubectl -n default get ingesters,statefulsets,pods,services

# The CLI from the ingester image, run once in the cluster, talking to the
# client Service "dev" (gRPC 8082).
cli() {
    kubectl -n default run "sluice-cli-$RANDOM" --rm --stdin --quiet --restart=Never \
        --image="$INGESTER_IMAGE" --image-pull-policy=Never -- "$@"
}

step "write"
echo 'cpu,host=kind usage=0.5 1767225600000000000' |
    cli write --addr http://dev:8082 --namespace demo -

step "query"
out=$(cli query --addr http://dev:8082 --namespace demo --table cpu --format csv)
echo "$out"
grep -q 'kind' <<<"$out" || { echo "kind.sh: the written row did not come back" >&2; exit 1; }

step "done: Sluice runs on kind-$CLUSTER"
if [ "${1:-}" = "--delete" ]; then
    kind delete cluster --name "$CLUSTER"
fi
