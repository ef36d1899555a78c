//go:build !linux

package procmem

import "errors"

// Smaps is not available off Linux.
func Smaps(int) ([]Mapping, error) { return nil, errors.New("no /proc/<pid>/smaps off Linux") }

// ReleaseSharedReadOnly does nothing off Linux.
func ReleaseSharedReadOnly(uintptr, string) error { return nil }

// ReleaseExecutable does nothing off Linux.
func ReleaseExecutable() (int, error) { return 0, nil }
