//go:build !linux

package procmem

// ReleaseSharedReadOnly does nothing off Linux.
func ReleaseSharedReadOnly(uintptr, string) error { return nil }

// ReleaseExecutable does nothing off Linux.
func ReleaseExecutable() (int, error) { return 0, nil }
