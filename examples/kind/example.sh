#!/usr/bin/env bash
# The example study on a local cluster where the chart is installed as release
# hpo-operator in hpo-system with examples/kind/values.yaml: the MinIO's keys copied to
# the study's namespace (default), the dataset uploaded, the study applied.
#   bash examples/kind/example.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

key() {
    kubectl get secret hpo-operator-minio -n hpo-system -o jsonpath="{.data.$1}" | base64 -d
}
kubectl create secret generic minio-credentials --namespace default \
    --from-literal=accessKey="$(key accessKey)" --from-literal=secretKey="$(key secretKey)" \
    --dry-run=client -o yaml | kubectl apply -f -
kubectl create configmap transistor-csv --namespace hpo-system \
    --from-file=examples/data/transistor.csv --dry-run=client -o yaml | kubectl apply -f -
kubectl delete job upload-dataset --namespace hpo-system --ignore-not-found
kubectl apply -f examples/kind/dataset-job.yaml
kubectl wait --namespace hpo-system --for=condition=complete job/upload-dataset --timeout=180s
kubectl apply -f manifests/example-study.yaml
echo "applied; follow it with: kubectl get hpostudies -w"
