#!/usr/bin/env bash
# Build the real Kubernetes control plane used by the cluster tests from Go modules, once, and cache
# it outside the repository, keyed by the versions below. Does nothing when the cache is complete.
#   kube-apiserver kube-controller-manager kube-scheduler kubectl  (k8s.io/kubernetes)
#   etcd (go.etcd.io/etcd/server/v3)   kwok (sigs.k8s.io/kwok)   helm (helm.sh/helm/v3)
# Usage: hack/build-testenv.sh            prints the bin folder on its last line
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"

key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
root="${POSTTRAIN_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/posttrain/testenv}"
bin="$root/$key/bin"
want=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm)

complete() { for b in "${want[@]}"; do [ -x "$bin/$b" ] || return 1; done; }
if complete; then echo "$bin"; exit 0; fi

log() { echo "[build-testenv $(date +%T)] $*" >&2; }
mkdir -p "$bin"
# One build per cache key at a time: a second caller (another test session, `posttrain dev-cluster
# up`) waits for the first and then finds the cache complete.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$root/$key/.lock"
  if ! flock -n 9; then
    log "another build of $key is running; waiting for it"
    flock 9
  fi
  if complete; then echo "$bin"; exit 0; fi
fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
work="$root/$key/src"
mkdir -p "$work"

k8s_minor="v0${K8S_VERSION#v1}"   # v1.36.3 -> v0.36.3 for the staging modules

build_kubernetes() {
  local dir="$work/kubernetes"
  [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kube-controller-manager" ] && [ -x "$bin/kube-scheduler" ] \
    && [ -x "$bin/kubectl" ] && return 0
  mkdir -p "$dir" && cd "$dir"
  rm -f go.mod go.sum
  go mod init posttrain.dev/testenv/kubernetes >/dev/null 2>&1
  local upstream
  upstream=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # Every staging module the upstream go.mod replaces with ./staging/src/k8s.io/<name>.
  python3 - "$upstream" "$k8s_minor" >> go.mod <<'PY'
import re, sys
text = open(sys.argv[1]).read()
names = sorted(set(re.findall(r"k8s\.io/([\w.-]+)\s*=>\s*\./staging/src/k8s\.io/", text)))
print("replace (")
for n in names:
    print(f"\tk8s.io/{n} => k8s.io/{n} {sys.argv[2]}")
print(")")
PY
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go get "k8s.io/kubernetes@${K8S_VERSION}" >&2
  go mod tidy -e >&2 || true
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=${K8S_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X $p.gitTreeState=clean"
  done
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    log "building $c ${K8S_VERSION}"
    go build -trimpath -ldflags "$ld" -o "$bin/$c.tmp" "k8s.io/kubernetes/cmd/$c" && mv "$bin/$c.tmp" "$bin/$c"
  done
}

build_etcd() {
  [ -x "$bin/etcd" ] && return 0
  local dir="$work/etcd"
  mkdir -p "$dir" && cd "$dir"
  rm -f go.mod go.sum
  go mod init posttrain.dev/testenv/etcd >/dev/null 2>&1
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >&2
  go mod tidy -e >&2 || true
  log "building etcd ${ETCD_VERSION}"
  go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3 && mv "$bin/etcd.tmp" "$bin/etcd"
}

build_kwok() {
  [ -x "$bin/kwok" ] && return 0
  log "building kwok ${KWOK_VERSION}"
  GOBIN="$bin" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
}

build_helm() {
  [ -x "$bin/helm" ] && return 0
  log "building helm ${HELM_VERSION}"
  local minor
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  GOBIN="$bin" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${minor} -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${minor}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
}

build_kwok
build_helm
build_etcd
build_kubernetes
complete || { log "incomplete: $(ls "$bin")"; exit 1; }
log "done: $bin"
echo "$bin"
