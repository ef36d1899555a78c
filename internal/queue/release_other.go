//go:build !linux

package queue

// releaseMapped does nothing off Linux (see release_linux.go).
func (s *Store) releaseMapped() error { return nil }
