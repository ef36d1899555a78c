//go:build linux || darwin || freebsd

package config

import "syscall"

// Modes of access.
const (
	accessRead  uint32 = 0x4
	accessWrite uint32 = 0x2
	accessExec  uint32 = 0x1
)

// access checks the process's permission to use path (access(2), with
// the real user id: check-config answers for the user that runs it).
func access(path string, mode uint32) error { return syscall.Access(path, mode) }
