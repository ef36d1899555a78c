package queue

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// StreamStats describes one stream.
type StreamStats struct {
	Stream    string `json:"stream"`
	Records   int64  `json:"records"`
	Bytes     int64  `json:"bytes"`
	Leased    int    `json:"leased"`
	Dead      int64  `json:"dead"`
	DeadBytes int64  `json:"dead_bytes"`
	// Oldest is when the oldest pending record was appended (zero if none).
	Oldest time.Time `json:"oldest,omitzero"`
	// OldestAge is how long the oldest pending record has waited.
	OldestAge time.Duration `json:"oldest_age_ns"`
}

// Stats describes the whole queue.
type Stats struct {
	Streams []StreamStats `json:"streams"`
	Records int64         `json:"records"`
	Bytes   int64         `json:"bytes"`
	Dead    int64         `json:"dead"`
	// DeadBytes is what the dead letters take, against DeadMaxBytes.
	DeadBytes    int64 `json:"dead_bytes"`
	DeadMaxBytes int64 `json:"dead_max_bytes"`
	// DeadExpired counts dead letters removed by dead_retention since start.
	DeadExpired int64 `json:"dead_expired"`
	MaxBytes    int64 `json:"max_bytes"`
	// UsedBytes is what is in use in the file (records, dead letters,
	// idempotency keys, state, bbolt's pages), against MaxBytes.
	UsedBytes int64 `json:"used_bytes"`
	FileBytes int64 `json:"file_bytes"`
	// Blocked counts appends waiting for space right now.
	Blocked int `json:"blocked"`
	// Full is true when appends wait (or are rejected) for space, and
	// FullReason says which quota.
	Full       bool   `json:"full"`
	FullReason string `json:"full_reason,omitempty"`
	// LastCommitError is the error of the last commit, if it failed.
	LastCommitError string `json:"last_commit_error,omitempty"`
}

// Stats returns counts per stream and in total. It reads one key per stream.
func (s *Store) Stats() (Stats, error) {
	now := s.o.Now()
	out := Stats{MaxBytes: s.o.MaxBytes, FileBytes: s.FileSize()}
	names := s.Streams()
	s.mu.Lock()
	for _, n := range names {
		st := s.streams[n]
		if st == nil {
			continue
		}
		out.Streams = append(out.Streams, StreamStats{Stream: n, Records: st.count, Bytes: st.bytes, Leased: len(st.leases), Dead: st.dead, DeadBytes: st.deadBytes})
		out.Records += st.count
		out.Bytes += st.bytes
		out.Dead += st.dead
	}
	out.Blocked = s.blocked
	out.UsedBytes, out.DeadBytes, out.DeadMaxBytes, out.DeadExpired = s.used, s.deadTotal, s.o.DeadMaxBytes, s.expired
	out.FullReason = s.fullLocked(nil, 1)
	out.Full = s.blocked > 0 || out.FullReason != ""
	if out.Full && out.FullReason == "" {
		out.FullReason = "appends are waiting for space"
	}
	if s.lastErr != nil {
		out.LastCommitError = s.lastErr.Error()
	}
	s.mu.Unlock()
	err := s.db.View(func(tx *bolt.Tx) error {
		for i := range out.Streams {
			b, err := streamBucket(tx, out.Streams[i].Stream, false)
			if err != nil {
				continue // purged meanwhile
			}
			_, v := b.Bucket(bucketItems).Cursor().First()
			if v == nil {
				continue
			}
			env, err := decodeEnvelope(v)
			if err != nil {
				return fmt.Errorf("stream %s: %w", out.Streams[i].Stream, err)
			}
			out.Streams[i].Oldest = time.Unix(0, env.Appended).UTC()
			out.Streams[i].OldestAge = now.Sub(out.Streams[i].Oldest)
		}
		return nil
	})
	return out, err
}

// Check verifies the file (bbolt's page check), decodes every record and
// dead letter, and compares each stream's stored counters with what it
// holds. It returns every problem found, joined.
func (s *Store) Check() error {
	var problems []error
	err := s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			problems = append(problems, fmt.Errorf("%w: %w", ErrCorrupt, err))
		}
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			problems = append(problems, fmt.Errorf("%w: no meta bucket", ErrCorrupt))
		} else if err := checkSchemaValue(meta.Get(keySchema)); err != nil {
			problems = append(problems, err)
		}
		root := tx.Bucket(bucketStreams)
		if root == nil {
			problems = append(problems, fmt.Errorf("%w: no streams bucket", ErrCorrupt))
			return nil
		}
		return root.ForEachBucket(func(name []byte) error {
			b := root.Bucket(name)
			stored, err := decodeCounters(b.Get(keyStats))
			if err != nil {
				problems = append(problems, fmt.Errorf("stream %s: %w", name, err))
			}
			var got counters
			for _, part := range []struct {
				bucket []byte
				n, sz  *int64
			}{{bucketItems, &got.count, &got.bytes}, {bucketDead, &got.dead, &got.deadBytes}} {
				bk := b.Bucket(part.bucket)
				if bk == nil {
					problems = append(problems, fmt.Errorf("%w: stream %s has no %s bucket", ErrCorrupt, name, part.bucket))
					continue
				}
				_ = bk.ForEach(func(k, v []byte) error {
					if len(k) != 8 {
						problems = append(problems, fmt.Errorf("%w: stream %s %s key of %d bytes", ErrCorrupt, name, part.bucket, len(k)))
						return nil
					}
					if _, err := decodeEnvelope(v); err != nil {
						problems = append(problems, fmt.Errorf("stream %s %s seq %d: %w", name, part.bucket, binary.BigEndian.Uint64(k), err))
					}
					*part.n++
					*part.sz += int64(len(v))
					return nil
				})
			}
			if hb := b.Bucket(bucketHeld); hb != nil {
				_ = hb.ForEach(func(k, v []byte) error {
					var h struct {
						Seq uint64 `json:"seq"`
					}
					if e := json.Unmarshal(v, &h); e != nil || len(k) != 8 || h.Seq != binary.BigEndian.Uint64(k) {
						problems = append(problems, fmt.Errorf("%w: stream %s hold %x is damaged", ErrCorrupt, name, k))
					}
					return nil
				})
			}
			if mb := b.Bucket(bucketMarks); mb != nil {
				items := b.Bucket(bucketItems)
				_ = mb.ForEach(func(k, _ []byte) error {
					if items != nil && items.Get(k) == nil {
						problems = append(problems, fmt.Errorf("%w: stream %s has a mark for seq %d, which is not queued", ErrCorrupt, name, binary.BigEndian.Uint64(k)))
					}
					return nil
				})
			}
			if err == nil && got != stored {
				problems = append(problems, fmt.Errorf("%w: stream %s counters say %d records/%d bytes/%d dead, file holds %d/%d/%d",
					ErrCorrupt, name, stored.count, stored.bytes, stored.dead, got.count, got.bytes, got.dead))
			}
			return nil
		})
	})
	if err != nil {
		problems = append(problems, err)
	}
	return errors.Join(problems...)
}

// maybeCompact compacts the file at open when it is large and mostly empty.
func (s *Store) maybeCompact() error {
	size := s.FileSize()
	if size < s.o.CompactMinBytes || s.total+s.deadTotal > size/10 {
		return nil
	}
	// The lock file stays held throughout, so no other process opens the
	// queue while its bbolt file is closed and replaced.
	s.log.Info().Int64("file_bytes", size).Int64("live_bytes", s.total).Msg("compacting queue file")
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close queue for compaction: %w", err)
	}
	if err := compactFile(s.path, s.o); err != nil {
		s.log.Warn().Err(err).Msg("queue compaction failed; keeping the file as it is")
	}
	db, err := openBolt(s.path, s.o)
	if err != nil {
		return err
	}
	s.db = db
	s.log.Info().Int64("file_bytes", s.FileSize()).Msg("queue file compacted")
	return nil
}

// Compact rewrites the queue file at path into a new file and renames it
// over the old one, returning the space of drained records to the file
// system. The gateway must be stopped (the lock is taken).
func Compact(path string, o Options) (before, after int64, err error) {
	o.setDefaults()
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, fmt.Errorf("compact queue: %w", err)
	}
	lock, err := lockFile(path, o)
	if err != nil {
		return fi.Size(), 0, err
	}
	defer func() { _ = lock.Close() }()
	if err := compactFile(path, o); err != nil {
		return fi.Size(), 0, err
	}
	fi2, err := os.Stat(path)
	if err != nil {
		return fi.Size(), 0, fmt.Errorf("compact queue: %w", err)
	}
	return fi.Size(), fi2.Size(), nil
}

func compactFile(path string, o Options) error {
	src, err := openBolt(path, o)
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }()
	// A file of a newer plantgate is not rewritten: its layout may hold
	// what this one cannot copy faithfully.
	if err := src.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("%w: %s is not a plantgate queue (no meta bucket)", ErrCorrupt, path)
		}
		v := meta.Get(keySchema)
		if len(v) == 8 && binary.BigEndian.Uint64(v) < SchemaVersion {
			return nil // an older file is copied as it is and migrated at Open
		}
		return checkSchemaValue(v)
	}); err != nil {
		return fmt.Errorf("compact queue: %w", err)
	}
	tmp := path + ".compact"
	_ = os.Remove(tmp)
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: o.OpenTimeout})
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	if err := bolt.Compact(dst, src, 64<<20); err != nil {
		_ = dst.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("compact queue: %w", err)
	}
	if err := dst.Sync(); err != nil {
		_ = dst.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("sync compacted queue: %w", err)
	}
	if err := dst.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("close compacted queue: %w", err)
	}
	// Rename while still holding the lock on the old file, then sync the
	// directory so the rename survives a power cut.
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace queue file: %w", err)
	}
	if d, err := os.Open(dirOf(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func dirOf(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			if i == 0 {
				return "/"
			}
			return p[:i]
		}
	}
	return "."
}

// Healthy reports whether the store can take writes: it is open and its
// last commit did not fail. It reads only memory, so it is cheap enough
// for a liveness probe.
func (s *Store) Healthy() error {
	if s.isClosed.Load() {
		return ErrClosed
	}
	if s.reqs == nil {
		return fmt.Errorf("queue opened read-only")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr != nil {
		return fmt.Errorf("the last commit failed: %w", s.lastErr)
	}
	return nil
}

// Pending returns how many records wait in stream (from memory).
func (s *Store) Pending(stream string) int64 {
	n, _ := s.pending(stream)
	return n
}

// pending returns the count and bytes of stream's waiting records.
func (s *Store) pending(stream string) (int64, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[stream]; st != nil {
		return st.count, st.bytes
	}
	return 0, 0
}
