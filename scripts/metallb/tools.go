//go:build tools

// Wrapper module: pins the MetalLB release the lab runs beside metalxdp (issue 16), built from
// the Go module proxy. Nothing of MetalLB is copied here: `go build` builds the upstream
// commands named below. The release is in scripts/metallb/VERSION (build.sh checks go.mod).
package tools

import (
	_ "go.universe.tf/metallb/controller"
	_ "go.universe.tf/metallb/speaker"
)
