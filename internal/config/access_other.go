//go:build !(linux || darwin || freebsd)

package config

const (
	accessRead  uint32 = 0x4
	accessWrite uint32 = 0x2
	accessExec  uint32 = 0x1
)

// access cannot ask the system here; the gateway's own open reports it.
func access(string, uint32) error { return nil }
