package queue

import (
	"context"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// TestPruneRemovesExpiredIDs: once the dedup window has passed, pruning
// removes an id from the file, in the version 2 form (with its content
// hash) and in version 1's 8-byte form alike, so the ids of a gateway that
// runs for years do not fill its quota; an id seen again within the window
// stays.
func TestPruneRemovesExpiredIDs(t *testing.T) {
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s, _ := openTemp(t, Options{Now: clock, DedupWindow: time.Hour})
	ctx := context.Background()
	add := func(id string) {
		t.Helper()
		if _, err := s.Append(ctx, []Entry{{Stream: "f.s", Record: pipeline.Record{ID: id, Key: "k"}}}); err != nil {
			t.Fatal(err)
		}
	}
	add("old")
	// A version 1 value: the expiry alone.
	if err := s.submit(ctx, 1, func(tx *bolt.Tx, _ *deltas) error {
		b := tx.Bucket(bucketStreams).Bucket([]byte("f.s"))
		exp := itob(uint64(now.Add(time.Hour).UnixNano()))
		if err := b.Bucket(bucketIDs).Put([]byte("v1"), exp); err != nil {
			return err
		}
		return b.Bucket(bucketIdx).Put(append(exp, "v1"...), nil)
	}, nil); err != nil {
		t.Fatal(err)
	}
	advance(50 * time.Minute)
	add("recent")
	advance(20 * time.Minute)
	s.PruneIDs()
	var ids, idx []string
	_ = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketStreams).Bucket([]byte("f.s"))
		_ = b.Bucket(bucketIDs).ForEach(func(k, _ []byte) error { ids = append(ids, string(k)); return nil })
		_ = b.Bucket(bucketIdx).ForEach(func(k, _ []byte) error { idx = append(idx, string(k[8:])); return nil })
		return nil
	})
	if len(ids) != 1 || ids[0] != "recent" || len(idx) != 1 || idx[0] != "recent" {
		t.Errorf("after pruning: ids %v, index %v; want only the id within the window", ids, idx)
	}
}
