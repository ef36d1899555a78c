// Package buildinfo carries the version and commit stamped by the linker
// (make build sets them with -ldflags -X).
package buildinfo

import (
	"fmt"
	"runtime"
)

// Version and Commit are set at link time.
var (
	Version = "dev"
	Commit  = "unknown"
	Date    = ""
)

// String is the one-line version banner printed by "plantgate version".
func String(program string) string {
	return fmt.Sprintf("%s %s (commit %s, %s, %s/%s)", program, Version, Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
