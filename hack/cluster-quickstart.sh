#!/usr/bin/env bash
# The quickstart on Kubernetes, on this machine (README, "cluster quickstart"): a dev cluster with a
# real node (kubelet + containerd + runc), the operator and trainer images built here and loaded into
# it, the chart installed with `helm install` (the operator runs from its image), the tiny models and
# the example data on a PersistentVolume, and examples/quickstart-cluster/ applied with kubectl. Waits
# until every resource has Succeeded and prints `kubectl get posttrain`. Needs root (the node) and apt.
#   hack/cluster-quickstart.sh          run it; the cluster stays up (the last lines say how to stop it)
#   hack/cluster-quickstart.sh --down   stop the cluster at the end
# Everything is cached (control plane and node binaries, images, the Python environment): a second run
# starts in seconds. State: .posttrain/cluster-quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
down=0
[ "${1:-}" = --down ] && down=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$SECONDS
step() { echo "[cluster-quickstart $(date +%T) +$((SECONDS - start))s] $*" >&2; }

step "Python environment, control plane and node binaries (cached)"
mkdir -p .posttrain
hack/build-testenv.sh --node > .posttrain/build-testenv.log 2>&1 &
build_pid=$!
venv=${POSTTRAIN_VENV:-$(hack/python-env.sh | tail -n 1)}
export PATH="$venv/bin:$PATH"
export PYTHONPATH="$PWD/operator:$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}"
if ! wait "$build_pid"; then tail -n 40 .posttrain/build-testenv.log >&2; exit 1; fi
POSTTRAIN_TESTENV_BIN=$(tail -n 1 .posttrain/build-testenv.log)
export POSTTRAIN_TESTENV_BIN

step "images (hack/build-images.sh)"
images=$(hack/build-images.sh | tail -n 1)

dir=.posttrain/cluster-quickstart
volume="$PWD/$dir/volume"
step "dev cluster with a real node"
posttrain dev-cluster down --dir "$dir/cluster" >/dev/null 2>&1 || true
eval "$(posttrain dev-cluster up --real-node --images "$images" --dir "$dir/cluster")"
export KUBECACHEDIR="$PWD/$dir/kube-cache"
k() { kubectl --cache-dir "$KUBECACHEDIR" "$@"; }

step "models and data on the volume"
# The models are made once (make-tiny-model does nothing when they exist), the volume afresh.
posttrain make-tiny-model "$dir/models/tiny-teacher" --seed 1 >/dev/null
posttrain make-tiny-model "$dir/models/tiny-student" --seed 2 >/dev/null
rm -rf "$volume" && mkdir -p "$volume/artifacts"
cp -r examples/quickstart-cluster/data "$volume/data"
cp -r "$dir/models" "$volume/models"
chown -R 1000:1000 "$volume"   # the pods' user

step "helm install (operator from localhost/posttrain/operator:dev)"
for ns in posttrain-system quickstart; do
  k create namespace "$ns" >/dev/null
  k label namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
done
export HELM_CACHE_HOME="$PWD/$dir/helm/cache" HELM_CONFIG_HOME="$PWD/$dir/helm/config" HELM_DATA_HOME="$PWD/$dir/helm/data"
helm install posttrain charts/posttrain-operator --namespace posttrain-system --wait --timeout 180s \
  --set image.repository=localhost/posttrain/operator --set image.tag=dev \
  --set workloads.trainerImage=localhost/posttrain/trainer:dev-cpu --set workloads.servingEngine=auto \
  --set operator.progressIntervalSeconds=5 >/dev/null
k wait pods -n posttrain-system -l app.kubernetes.io/component=operator --for=condition=Ready --timeout=180s >/dev/null

step "the volume (hostPath PersistentVolume bound to claim quickstart/posttrain) and the pipeline"
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: posttrain-quickstart}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {path: "$volume", type: Directory}
  claimRef: {namespace: quickstart, name: posttrain}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: posttrain, namespace: quickstart}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: posttrain-quickstart
  resources: {requests: {storage: 10Gi}}
EOF
k apply -n quickstart -f examples/quickstart-cluster/ >/dev/null
applied=$SECONDS

step "waiting until every resource has Succeeded"
while true; do
  phases=$(k get posttrain -n quickstart -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}')
  total=$(echo "$phases" | grep -c . || true)
  done_=$(echo "$phases" | grep -c '^Succeeded$' || true)
  if echo "$phases" | grep -q '^Failed$'; then
    k get posttrain -n quickstart
    echo "a resource failed; see kubectl describe and kubectl logs in namespace quickstart" >&2
    exit 1
  fi
  [ "$total" -gt 0 ] && [ "$done_" = "$total" ] && break
  sleep 5
done
k get posttrain -n quickstart
step "pipeline done in $((SECONDS - applied))s after kubectl apply; $((SECONDS - start))s in all"
if [ "$down" = 1 ]; then
  posttrain dev-cluster down --dir "$dir/cluster" >/dev/null
  step "cluster stopped"
else
  echo "The cluster keeps running: export KUBECONFIG=$PWD/$dir/cluster/kubeconfig; stop it with" \
    "posttrain dev-cluster down --dir $dir/cluster" >&2
fi
