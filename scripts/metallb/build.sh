#!/usr/bin/env bash
# MetalLB's controller and speaker of the pinned release (scripts/metallb/VERSION), built from
# the Go module proxy through this wrapper module, for side-by-side runs against metalxdp. A test
# rig peer, not part of the product. Cached: /var/cache/metalxdp/metallb/<version>-<key>/, keyed
# by the version and the hash of go.mod + go.sum; a second run builds nothing. Prints the bin dir.
#
# Why v0.15.2 and not v0.16.2 (the newest release): v0.16.2 needs github.com/metallb/frr-k8s
# v0.0.27, which the module proxy here refuses (403 "not available"), and it does not build
# against the newest served frr-k8s (v0.0.21: undefined AsPathPrependPrefixes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${METALXDP_CACHE:-/var/cache/metalxdp}
VERSION=$(cat "$here/VERSION")
grep -q "go.universe.tf/metallb $VERSION\$" "$here/go.mod" \
  || { echo "scripts/metallb/VERSION ($VERSION) and go.mod disagree" >&2; exit 1; }
command -v go >/dev/null || { echo "Go not found (the polyglot machine kind has Go 1.26)" >&2; exit 1; }
key=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)
BIN=$CACHE/metallb/$VERSION-$key
if [ -x "$BIN/controller" ] && [ -x "$BIN/speaker" ]; then
  echo "MetalLB $VERSION: ok (cached in $BIN)" >&2
else
  echo "MetalLB $VERSION: building controller and speaker from Go modules (first run only)" >&2
  export GOMODCACHE=$CACHE/gomod GOCACHE=$CACHE/gocache GOFLAGS=-mod=readonly GOTOOLCHAIN=local CGO_ENABLED=0
  mkdir -p "$BIN.tmp"
  start=$(date +%s)
  ( cd "$here" && go build -trimpath -ldflags "-s -w" -o "$BIN.tmp/" \
      go.universe.tf/metallb/controller go.universe.tf/metallb/speaker ) >"$CACHE/metallb-build.log" 2>&1 \
    || { tail -n 20 "$CACHE/metallb-build.log" >&2; echo "MetalLB build failed (log: $CACHE/metallb-build.log)" >&2; exit 1; }
  rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
  echo "MetalLB $VERSION built in $(( $(date +%s) - start ))s; cached in $BIN" >&2
fi
echo "$BIN"
