#!/usr/bin/env bash
# Build the real Kubernetes control plane used by the cluster tests from Go modules, once, and cache
# it outside the repository, keyed by the versions below. Does nothing when the cache is complete.
#   kube-apiserver kube-controller-manager kube-scheduler kubectl  (k8s.io/kubernetes)
#   etcd (go.etcd.io/etcd/server/v3)   kwok (sigs.k8s.io/kwok)   helm (helm.sh/helm/v3)
# With --node, also what a real node needs (tests/node, `posttrain dev-cluster up --real-node`):
#   kubelet (k8s.io/kubernetes), crictl (sigs.k8s.io/cri-tools), pause (the sandbox binary, from the
#   kubernetes module's build/pause/linux/pause.c), and Debian's containerd, runc, CNI plugins and
#   debootstrap (apt-get, once; needs root).
# Usage: hack/build-testenv.sh [--node]   prints the bin folder on its last line
set -euo pipefail
node=0
[ "${1:-}" = --node ] && node=1

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.37.0}"

key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
root="${POSTTRAIN_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/posttrain/testenv}"
bin="$root/$key/bin"
want=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm)
# The node's binaries share the control plane's cache key (same Kubernetes version); crictl's version
# is recorded beside it (crictl.version) so a change rebuilds it.
[ "$node" = 1 ] && want+=(kubelet crictl pause)
apt_packages=(containerd runc containernetworking-plugins debootstrap iptables)

packages_present() {
  [ "$node" = 1 ] || return 0
  command -v dpkg-query >/dev/null 2>&1 || return 0
  local p
  for p in "${apt_packages[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || return 1
  done
}
complete() {
  for b in "${want[@]}"; do [ -x "$bin/$b" ] || return 1; done
  if [ "$node" = 1 ]; then [ "$(cat "$bin/crictl.version" 2>/dev/null)" = "$CRICTL_VERSION" ] || return 1; fi
  packages_present
}
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

# A wrapper module requiring k8s.io/kubernetes, with every staging module the upstream go.mod replaces
# with ./staging/src/k8s.io/<name> pointed at its published v0.X.Y; builds the named cmd/ programs.
build_kubernetes_module() {
  local dir=$1 module=$2; shift 2
  mkdir -p "$dir" && cd "$dir"
  rm -f go.mod go.sum
  go mod init "$module" >/dev/null 2>&1
  local upstream
  upstream=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  python3 - "$upstream" "$k8s_minor" >> go.mod <<'PY'
import re, sys
text = open(sys.argv[1]).read()
names = sorted(set(re.findall(r"k8s\.io/([\w.-]+)\s*=>\s*\./staging/src/k8s\.io/", text)))
print("replace (")
for n in names:
    print(f"\tk8s.io/{n} => k8s.io/{n} {sys.argv[2]}")
print(")")
PY
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    local c
    for c in "$@"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
    printf ')\n'
  } > tools.go
  go get "k8s.io/kubernetes@${K8S_VERSION}" >&2
  go mod tidy -e >&2 || true
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=${K8S_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X $p.gitTreeState=clean"
  done
  for c in "$@"; do
    log "building $c ${K8S_VERSION}"
    go build -trimpath -ldflags "$ld" -o "$bin/$c.tmp" "k8s.io/kubernetes/cmd/$c" && mv "$bin/$c.tmp" "$bin/$c"
  done
}

build_kubernetes() {
  [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kube-controller-manager" ] && [ -x "$bin/kube-scheduler" ] \
    && [ -x "$bin/kubectl" ] && return 0
  build_kubernetes_module "$work/kubernetes" posttrain.dev/testenv/kubernetes \
    kube-apiserver kube-controller-manager kube-scheduler kubectl
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

install_packages() {
  packages_present && return 0
  log "installing ${apt_packages[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # --no-install-recommends: containerd would pull in nothing needed; the services are not used
  # (the node starts its own containerd with a private configuration).
  apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >&2
  # Debian starts the packaged containerd; the node runs its own, so keep the service stopped.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet containerd 2>/dev/null; then
    systemctl disable --now containerd >&2 || true
  fi
}

build_kubelet() {
  [ -x "$bin/kubelet" ] && return 0
  build_kubernetes_module "$work/kubelet" posttrain.dev/testenv/kubelet kubelet
}

build_crictl() {
  [ -x "$bin/crictl" ] && [ "$(cat "$bin/crictl.version" 2>/dev/null)" = "$CRICTL_VERSION" ] && return 0
  log "building crictl ${CRICTL_VERSION}"
  local tmp="$work/crictl-bin"
  mkdir -p "$tmp"
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION}" \
    "sigs.k8s.io/cri-tools/cmd/crictl@${CRICTL_VERSION}"
  mv "$tmp/crictl" "$bin/crictl"
  echo "$CRICTL_VERSION" > "$bin/crictl.version"
}

build_pause() {
  [ -x "$bin/pause" ] && return 0
  log "building pause ${K8S_VERSION}"
  local src
  src="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/build/pause/linux/pause.c"
  gcc -Os -Wall -Werror -static -DVERSION="${K8S_VERSION}-posttrain" -o "$bin/pause.tmp" "$src"
  strip "$bin/pause.tmp"
  mv "$bin/pause.tmp" "$bin/pause"
}

build_kwok
build_helm
build_etcd
build_kubernetes
if [ "$node" = 1 ]; then
  install_packages
  build_kubelet
  build_crictl
  build_pause
fi
complete || { log "incomplete: $(ls "$bin")"; exit 1; }
log "done: $bin"
echo "$bin"
