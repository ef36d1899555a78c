package queue

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// TestGroupCommitSharesCommits runs many concurrent Append callers in
// bursts and checks that they share fsync'd commits (Commits is well below
// the number of Appends; a committer that committed each request alone
// fails here) and that every Append returned only after its record was
// committed: the caller reads it back at once, by the sequence Append
// returned.
func TestGroupCommitSharesCommits(t *testing.T) {
	const (
		callers = 32
		rounds  = 20
		appends = callers * rounds
	)
	s, err := Open(filepath.Join(t.TempDir(), "gc.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := s.Commits()
	ctx := context.Background()
	errs := make(chan error, appends)
	var entered atomic.Int64
	for r := 0; r < rounds; r++ {
		// All callers of a round start together, as a burst of MQTT
		// handlers or flows would.
		start := make(chan struct{})
		var wg sync.WaitGroup
		for c := 0; c < callers; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				<-start
				entered.Add(1)
				id := fmt.Sprintf("r%d-c%d", r, c)
				res, err := s.Append(ctx, []Entry{{Stream: "gc", Record: pipeline.Record{Key: "k", ID: id, Fields: map[string]any{"c": c}}}})
				if err != nil {
					errs <- fmt.Errorf("append %s: %w", id, err)
					return
				}
				if len(res.Seqs) != 1 || res.Seqs[0] == 0 {
					errs <- fmt.Errorf("append %s: seqs %v", id, res.Seqs)
					return
				}
				// Append has returned: the record must be committed and
				// visible to any reader now, not after some later commit.
				recs, err := s.List("gc", res.Seqs[0]-1, 1)
				if err != nil {
					errs <- fmt.Errorf("list after append %s: %w", id, err)
					return
				}
				if len(recs) != 1 || recs[0].Seq != res.Seqs[0] || recs[0].ID != id {
					errs <- fmt.Errorf("append %s returned seq %d, but reading it back right away gives %v", id, res.Seqs[0], recs)
				}
			}(c)
		}
		// Stand for a slow disk: while this write transaction is open,
		// the committer waits in bbolt as it would in a long fsync, and
		// the requests arriving meanwhile pile up. Without it the test
		// would depend on the file system: on tmpfs an fsync is so fast
		// that few requests ever arrive during one.
		tx, err := s.db.Begin(true)
		if err != nil {
			t.Fatal(err)
		}
		entered.Store(0)
		close(start)
		waitQueued(t, s, &entered, callers)
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	commits := s.Commits() - base
	recs, err := s.List("gc", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != appends {
		t.Fatalf("stream holds %d records after %d appends", len(recs), appends)
	}
	t.Logf("%d appends by %d concurrent callers in %d bursts took %d commits (%.1f appends per commit)",
		appends, callers, rounds, commits, float64(appends)/float64(commits))
	if commits <= 0 {
		t.Fatalf("Commits() = %d after %d appends: it does not count commits", commits, appends)
	}
	// One commit per request would be 640. A burst takes about two: the
	// requests the committer had gathered when it began to wait, and all
	// that arrived while it waited.
	if commits*4 > appends {
		t.Fatalf("%d appends took %d commits: concurrent appends do not share commits (group commit broken)", appends, commits)
	}
}

// waitQueued waits until all callers have entered Append and the number of
// requests queued for the committer stopped growing (those it took before
// it blocked are not in the channel), for at most 2s.
func waitQueued(t *testing.T, s *Store, entered *atomic.Int64, callers int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	last, stable := -1, 0
	for time.Now().Before(deadline) {
		n := len(s.reqs)
		if entered.Load() == int64(callers) {
			if n >= callers-1 {
				return
			}
			if n == last {
				if stable++; stable >= 20 {
					return
				}
			} else {
				stable = 0
			}
		}
		last = n
		time.Sleep(time.Millisecond)
	}
}
