#!/usr/bin/env bash
# Build the operator and trainer images without a registry or an image builder, as OCI archives that `ctr images import` loads (the real node does it, see
# operator/posttrain/testenv/realnode.py). Needs root (debootstrap, chroot), Debian's debootstrap and
# the uv cache that hack/python-env.sh fills. Every image is stacked from cached layers:
#   base     Debian (debootstrap minbase + python3), user posttrain (UID/GID 1000)   key: suite, packages
#   deps     the locked environment in /opt/posttrain (uv sync --frozen, no project)  key: uv.lock, extras
#   project  this checkout's package (operator/, trainer/)                            rebuilt, deterministic
# so a source change rebuilds only a small layer, and an unchanged image is neither rewritten nor
# re-imported (same manifest digest). The trainer is the CPU variant: torch exactly as locked (the PyPI
# build, which runs on CPU) without triton and the gpu extra; images/trainer/Dockerfile stays the CUDA
# image for clusters.
#   hack/build-images.sh          prints the folder holding operator.oci.tar and trainer.oci.tar on
#                                 its last line
# Environment: POSTTRAIN_IMAGES_CACHE (default ~/.cache/posttrain/images), IMAGE_TAG (default dev),
# DEBIAN_MIRROR, DEBIAN_SUITE (bookworm: its python3 is the 3.11 the lock needs).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
repo=$PWD
cache="${POSTTRAIN_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/posttrain/images}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
tag="${IMAGE_TAG:-dev}"
# libgomp1: torch's OpenMP runtime; ca-certificates: HTTPS to S3 artifact stores.
packages="python3,ca-certificates,libgomp1"
out="$cache/out"
mkdir -p "$out"

log() { echo "[build-images $(date +%T)] $*" >&2; }
# One build at a time per cache (another caller waits, then finds everything cached).
exec 9>"$cache/.lock"
flock 9

# Layer tar of a folder: sorted, numeric owners, no atime/ctime; with a third argument "fixed", every
# mtime is 0 too, so the same files give the same digest (the project layer, rebuilt on every call).
make_layer() {
  local dir=$1 tar_out=$2 mtime=()
  [ "${3:-}" = fixed ] && mtime=(--mtime=@0)
  (cd "$dir" && tar --sort=name "${mtime[@]}" --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./tmp/*' \
    --exclude='./var/cache/apt/*' --exclude='./var/lib/apt/lists/*' --exclude='./var/log/*' \
    -cf "$tar_out.tmp" .)
  mv "$tar_out.tmp" "$tar_out"
}
oci() { python3 "$repo/operator/posttrain/testenv/oci.py" "$@"; }

# ---- base: Debian + python3 + the unprivileged user --------------------------------------------
base_key=$(echo "base v1 $suite $mirror $packages" | sha256sum | cut -c1-12)
base="$cache/base-$base_key"
if [ ! -f "$base/layer.tar" ]; then
  t0=$SECONDS
  if [ ! -f "$base/debootstrap.done" ]; then
    rm -rf "$base" && mkdir -p "$base"
    log "debootstrap $suite ($packages)"
    debootstrap --variant=minbase --include="$packages" "$suite" "$base/rootfs" "$mirror" >"$base/debootstrap.log" 2>&1 \
      || { tail -n 20 "$base/debootstrap.log" >&2; exit 1; }
    touch "$base/debootstrap.done"
  fi
  chroot "$base/rootfs" sh -c 'getent group posttrain >/dev/null || groupadd --gid 1000 posttrain'
  chroot "$base/rootfs" sh -c 'id posttrain >/dev/null 2>&1 || exec "$@"' - useradd --uid 1000 --gid 1000 --home-dir /home/posttrain --create-home \
    --shell /usr/sbin/nologin posttrain
  rm -rf "$base/rootfs/var/lib/apt/lists/"* "$base/rootfs/var/cache/apt/"*
  make_layer "$base/rootfs" "$base/layer.tar"
  log "base layer: $((SECONDS - t0)) s, $(du -m "$base/layer.tar" | cut -f1) MB"
fi

# The uv executable itself (copied into the chroot), not a wrapper such as pyenv's shim.
uv_bin=$(command -v uv)
if [ "$(head -c 4 "$uv_bin" | tr -d '\177')" != ELF ]; then
  uv_bin=$(pyenv which uv 2>/dev/null || python3 -c 'import uv; print(uv.find_uv_bin())')
fi
uv_cache=$(uv cache dir)

# ---- deps: the locked environment for one set of extras -----------------------------------------
# usage: deps NAME "EXTRA-FLAGS"  -> prints the layer path
deps() {
  local name=$1 flags=$2 key dir root
  key=$( (cat uv.lock; echo "deps v1 $base_key $flags") | sha256sum | cut -c1-12)
  dir="$cache/deps-$name-$key"
  if [ -f "$dir/layer.tar" ]; then echo "$dir/layer.tar"; return; fi
  local t0=$SECONDS
  root="$base/rootfs"
  rm -rf "$dir" "$root/opt/posttrain" "$root/tmp/build" && mkdir -p "$dir/tree/opt" "$root/tmp/build/src" "$root/tmp/build/uv-cache"
  cp pyproject.toml uv.lock README.md "$root/tmp/build/src/"
  install -m 0755 "$uv_bin" "$root/tmp/build/uv"
  mount --bind "$uv_cache" "$root/tmp/build/uv-cache"
  mount -t proc proc "$root/proc"
  mount --bind /dev "$root/dev"
  trap 'umount "$base/rootfs/tmp/build/uv-cache" "$base/rootfs/proc" "$base/rootfs/dev" 2>/dev/null || true' EXIT
  log "uv sync ($name: $flags)"
  # shellcheck disable=SC2086
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin UV_CACHE_DIR=/tmp/build/uv-cache \
    UV_PROJECT_ENVIRONMENT=/opt/posttrain UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 \
    /tmp/build/uv sync --frozen --no-dev --no-install-project --project /tmp/build/src \
    --python /usr/bin/python3.11 $flags >&2
  umount "$root/tmp/build/uv-cache" "$root/proc" "$root/dev"
  trap - EXIT
  mv "$root/opt/posttrain" "$dir/tree/opt/posttrain"
  rm -rf "$root/tmp/build"
  make_layer "$dir/tree" "$dir/layer.tar"
  rm -rf "$dir/tree"
  log "deps layer $name: $((SECONDS - t0)) s, $(du -m "$dir/layer.tar" | cut -f1) MB"
  echo "$dir/layer.tar"
}

# ---- project: this checkout, installed without dependencies --------------------------------------
project_layer() {
  local dir="$cache/project" site=opt/posttrain/lib/python3.11/site-packages
  rm -rf "$dir" && mkdir -p "$dir/stage" "$dir/tree/$site" "$dir/tree/opt/posttrain/bin"
  # Only the files a wheel of the project holds, so the layer changes exactly when they do (no
  # bytecode: it would not be byte-identical from one build to the next).
  UV_PYTHON_DOWNLOADS=never uv pip install --quiet --no-deps --target "$dir/stage" \
    --python /usr/bin/python3.11 "$repo" >&2
  mv "$dir/stage/bin/"* "$dir/tree/opt/posttrain/bin/"
  rmdir "$dir/stage/bin"
  sed -i '1s|^#!.*|#!/opt/posttrain/bin/python|' "$dir/tree/opt/posttrain/bin/"*
  rm -f "$dir/stage/"*.dist-info/direct_url.json "$dir/stage/"*.dist-info/RECORD
  mv "$dir/stage/"* "$dir/tree/$site/"
  make_layer "$dir/tree" "$dir/layer.tar" fixed
  rm -rf "$dir/stage" "$dir/tree"
  echo "$dir/layer.tar"
}

t0=$SECONDS
operator_deps=$(deps operator "--extra operator")
trainer_deps=$(deps trainer "--extra trainer --no-install-package triton")
project=$(project_layer)
env=(--env PATH=/opt/posttrain/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  --env PYTHONUNBUFFERED=1 --env PYTHONDONTWRITEBYTECODE=1)
oci "localhost/posttrain/operator:$tag" "$out/operator.oci.tar" \
  --layer "$base/layer.tar" --layer "$operator_deps" --layer "$project" "${env[@]}" \
  --user 1000:1000 --entrypoint '["posttrain"]' --cmd '["operator", "--all-namespaces"]' \
  --label org.opencontainers.image.title=posttrain-operator >/dev/null
oci "localhost/posttrain/trainer:$tag-cpu" "$out/trainer.oci.tar" \
  --layer "$base/layer.tar" --layer "$trainer_deps" --layer "$project" "${env[@]}" \
  --env HOME=/home/posttrain --env HF_HOME=/home/posttrain/.cache/huggingface --workdir /home/posttrain \
  --user 1000:1000 --entrypoint '["posttrain-trainer"]' --cmd '["--help"]' \
  --label org.opencontainers.image.title=posttrain-trainer >/dev/null

log "images ready in $((SECONDS - t0)) s: $(cd "$out" && du -m -- *.oci.tar | tr '\t\n' ' ')"
echo "$out"
