#!/usr/bin/env bash
# build.sh builds the local control plane and the real clients that the tests
# use — etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok,
# kubectl and helm — from the Go module proxy, into a cache directory keyed by
# their versions. A second run finds them there and returns at once. The last
# line printed on stdout is the directory that holds the binaries.
#
# Environment: DRIFTWATCH_CACHE (default $XDG_CACHE_HOME/driftwatch or
# ~/.cache/driftwatch).
set -euo pipefail

K8S_VERSION=v1.37.0     # k8s.io/kubernetes; its staging modules are v0.37.0
ETCD_VERSION=v3.6.16    # go.etcd.io/etcd/server/v3 (tools/etcd/go.mod)
KWOK_VERSION=v0.8.0     # sigs.k8s.io/kwok
HELM_VERSION=v4.3.2     # helm.sh/helm/v4

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${DRIFTWATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/driftwatch}
gover=$(go env GOVERSION)
key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}_${gover}"
bin="$cache/bin/$key"
mkdir -p "$bin"

# One build at a time: test packages start in parallel and all need these.
exec 9>"$bin/.lock"
flock 9

export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
k8s_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=37 \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION} \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=37"

# build NAME DIR PACKAGE [LDFLAGS]: go build PACKAGE in DIR unless NAME exists.
build() {
	local name=$1 dir=$2 pkg=$3 ldflags=${4:--s -w}
	[ -x "$bin/$name" ] && return 0
	echo "building $name ($pkg)" >&2
	local start=$SECONDS
	(cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$bin/.$name.tmp" "$pkg")
	mv "$bin/.$name.tmp" "$bin/$name"
	echo "built $name in $((SECONDS - start)) s" >&2
}

# install NAME MODULE/PACKAGE@VERSION [LDFLAGS]: a module built with its own
# go.mod, outside ours, so that its dependency versions are the ones it tested.
install() {
	local name=$1 pkg=$2 ldflags=${3:--s -w}
	[ -x "$bin/$name" ] && return 0
	echo "building $name ($pkg)" >&2
	local start=$SECONDS tmp
	tmp=$(mktemp -d)
	(cd "$tmp" && GOBIN="$tmp" GOWORK=off go install -trimpath -ldflags "$ldflags" "$pkg")
	mv "$tmp/$name" "$bin/$name"
	rm -rf "$tmp"
	echo "built $name in $((SECONDS - start)) s" >&2
}

total=$SECONDS
build etcd "$here/etcd" .
build kube-apiserver "$here" k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
build kube-controller-manager "$here" k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
build kube-scheduler "$here" k8s.io/kubernetes/cmd/kube-scheduler "$k8s_ldflags"
build kubectl "$here" ./cmd/kubectl "$k8s_ldflags"
install kwok "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" \
	"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
install helm "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}" \
	"-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}"
if [ $((SECONDS - total)) -gt 1 ]; then
	echo "control plane binaries ready in $((SECONDS - total)) s" >&2
fi
echo "$bin"
