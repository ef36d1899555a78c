package queue

import (
	bolt "go.etcd.io/bbolt"

	"github.com/plantgate/plantgate/internal/procmem"
)

// releaseMapped drops the pages of the queue file's memory map from the
// process's resident set.
//
// bbolt maps the whole file read-only and reads every page through that
// map, so each page it ever read (every leaf an append went through,
// and the id index takes its keys in no order) stays in the gateway's
// RSS: with records queued during an outage, RSS grew with the queue,
// though those pages are the kernel's page cache, which it can drop and
// fill again at will. bbolt writes with pwrite, never through the map, so
// procmem can drop them (see there). A read transaction holds bbolt's
// mmap lock, so the map cannot move while this runs; procmem advises
// nothing unless the kernel lists a shared, read-only mapping of the
// queue file at the map's start.
func (s *Store) releaseMapped() error {
	return s.db.View(func(*bolt.Tx) error {
		return procmem.ReleaseSharedReadOnly(s.db.Info().Data, s.db.Path())
	})
}
