package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// TestFailingRequestCommitsNothingAndFailsNoNeighbour: a request whose
// apply fails after writing takes none of its writes into the file, and
// the requests that shared its group commit are committed all the same.
func TestFailingRequestCommitsNothingAndFailsNoNeighbour(t *testing.T) {
	s, _ := openTemp(t, Options{CommitMaxDelay: 20 * time.Millisecond})
	ctx := context.Background()
	appendN(t, s, "f.s", 1)
	before := s.Commits()
	var wg sync.WaitGroup
	errs := make([]error, 9)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Append(ctx, []Entry{{Stream: "f.s", Record: rec("n", i)}})
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Writes a record and state, then fails: as a bbolt error in the
		// middle of a request would.
		errs[8] = s.submit(ctx, 1, func(tx *bolt.Tx, d *deltas) error {
			b, err := streamBucket(tx, "f.s", false)
			if err != nil {
				return err
			}
			if err := b.Bucket(bucketItems).Put(itob(999), []byte{envelopeV1, '{', '}'}); err != nil {
				return err
			}
			if err := applyStates(tx, []StateWrite{{Scope: "x", Name: "half", Value: []byte("written")}}); err != nil {
				return err
			}
			d.of("f.s").count++
			return errors.New("injected failure after writing")
		}, nil)
	}()
	wg.Wait()
	for i, err := range errs[:8] {
		if err != nil {
			t.Errorf("neighbour append %d failed: %v", i, err)
		}
	}
	if errs[8] == nil || !strings.Contains(errs[8].Error(), "injected") {
		t.Errorf("failing request returned %v", errs[8])
	}
	if s.Commits()-before >= 9 {
		t.Logf("note: %d commits for 9 requests (the requests did not share a commit)", s.Commits()-before)
	}
	if _, ok, _ := s.GetState("x", "half"); ok {
		t.Error("the failing request's state write was committed")
	}
	recs, _ := s.List("f.s", 0, 0)
	for _, r := range recs {
		if r.Seq == 999 {
			t.Error("the failing request's record was committed")
		}
	}
	if len(recs) != 9 {
		t.Errorf("%d records, want 9", len(recs))
	}
	if err := s.Check(); err != nil {
		t.Fatalf("check: %v", err)
	}
}

// TestRecordThatCannotBeStoredIsRefusedUpFront: an id bbolt cannot take as
// a key is refused by ValidateEntry and Append before anything is written.
func TestRecordThatCannotBeStoredIsRefusedUpFront(t *testing.T) {
	s, _ := openTemp(t, Options{})
	long := pipeline.Record{ID: strings.Repeat("x", 40<<10), Fields: map[string]any{"n": 1}}
	if err := s.ValidateEntry(Entry{Stream: "f.s", Record: long}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ValidateEntry = %v, want ErrTooLarge", err)
	}
	_, err := s.Append(context.Background(), []Entry{{Stream: "f.s", Record: rec("k", 1)}, {Stream: "f.s", Record: long}})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append = %v, want ErrTooLarge", err)
	}
	st, _ := s.Stats()
	if st.Records != 0 {
		t.Errorf("%d records stored", st.Records)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestQuotaCountsEverythingOnDisk: dead letters, ids and state count
// against max_bytes; dead-lettering does not free quota; the file stays
// near its quota; and the dead-letter cap stops appends like a full queue.
func TestQuotaCountsEverythingOnDisk(t *testing.T) {
	t.Run("dead letters fill the quota", func(t *testing.T) {
		const quota = 512 << 10
		s, path := openTemp(t, Options{MaxBytes: quota, OnFull: Reject})
		ctx := context.Background()
		var err error
		n := 0
		for ; n < 10000; n++ {
			if _, err = s.Append(ctx, []Entry{{Stream: "f.s", Record: bigRec("k", n)}}); err != nil {
				break
			}
			got, _ := s.Lease("f.s", 1, -1)
			if err := s.DeadLetter(ctx, "f.s", []Dead{{Seq: got[0].Seq, Reason: "rejected by F&O"}}); err != nil {
				t.Fatal(err)
			}
		}
		if !errors.Is(err, ErrFull) {
			t.Fatalf("after %d dead letters: %v, want ErrFull", n, err)
		}
		st, _ := s.Stats()
		if st.Records != 0 || st.Dead != int64(n) || !st.Full || !strings.Contains(st.FullReason, "max_bytes") {
			t.Errorf("stats: %d records, %d dead, full %v (%s)", st.Records, st.Dead, st.Full, st.FullReason)
		}
		fi, _ := os.Stat(path)
		if fi.Size() > quota+(1<<20)+64<<10 {
			t.Errorf("file %d bytes for a quota of %d", fi.Size(), quota)
		}
		// Purging dead letters makes room again.
		if _, err := s.Purge(ctx, "f.s", PurgeDead, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(ctx, []Entry{{Stream: "f.s", Record: bigRec("k", n)}}); err != nil {
			t.Fatalf("append after purging the dead letters: %v", err)
		}
	})
	t.Run("dead-letter cap", func(t *testing.T) {
		s, _ := openTemp(t, Options{MaxBytes: 64 << 20, DeadMaxBytes: 16 << 10, OnFull: Block})
		ctx := context.Background()
		for i := 0; ; i++ {
			st, _ := s.Stats()
			if st.DeadBytes >= 16<<10 {
				break
			}
			if _, err := s.AddDead(ctx, "_source.mes", []pipeline.Record{{Raw: []byte(strings.Repeat("b", 1000)), ID: fmt.Sprint(i)}}, []string{"decode"}); err != nil {
				t.Fatal(err)
			}
		}
		st, _ := s.Stats()
		if !st.Full || !strings.Contains(st.FullReason, "dead_max_bytes") {
			t.Fatalf("stats full %v (%q), want full because of dead letters", st.Full, st.FullReason)
		}
		c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if _, err := s.Append(c, []Entry{{Stream: "f.s", Record: rec("k", 1)}}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("append with the dead letters at their cap = %v, want it to wait", err)
		}
		if _, err := s.AddDead(c, "_source.mes", []pipeline.Record{{Raw: []byte("x")}}, []string{"decode"}); err == nil {
			t.Fatal("a source dead letter was added beyond the cap")
		}
		// A sink's dead-lettering still goes through: it frees a record.
		done := make(chan error, 1)
		go func() { _, err := s.Append(ctx, []Entry{{Stream: "f.s", Record: rec("k", 2)}}); done <- err }()
		if _, err := s.Purge(ctx, "_source.mes", PurgeDead, nil); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("blocked append after the purge: %v", err)
		}
	})
}

// TestDeadRetentionRemovesOnlyOldLettersAndSaysSo: dead letters past
// dead_retention go, counted in Stats; held ones stay.
func TestDeadRetentionRemovesOnlyOldLettersAndSaysSo(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, _ := openTemp(t, Options{DeadRetention: time.Hour, Now: clock})
	ctx := context.Background()
	appendN(t, s, "f.s", 3)
	recs, _ := s.Lease("f.s", 3, -1)
	if err := s.PutHold(ctx, "f.s", pipeline.Hold{Seq: recs[0].Seq, Key: "k", State: pipeline.HoldInDoubt}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeadLetter(ctx, "f.s", []Dead{{Seq: recs[0].Seq, Reason: "held"}, {Seq: recs[1].Seq, Reason: "old"}}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	if err := s.DeadLetter(ctx, "f.s", []Dead{{Seq: recs[2].Seq, Reason: "new"}}); err != nil {
		t.Fatal(err)
	}
	s.expireDead()
	dead, _ := s.ListDead("f.s", 0, 0)
	var reasons []string
	for _, d := range dead {
		reasons = append(reasons, d.Reason)
	}
	if got := strings.Join(reasons, ","); got != "held,new" {
		t.Errorf("dead letters left: %s, want held,new", got)
	}
	if st, _ := s.Stats(); st.DeadExpired != 1 {
		t.Errorf("DeadExpired = %d, want 1", st.DeadExpired)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestPurgedStreamNeverReusesSequences: marks and holds are keyed by
// sequence, so a stream created again after a purge continues after its
// last sequence, and the purge removed its holds: a new record inherits
// nothing.
func TestPurgedStreamNeverReusesSequences(t *testing.T) {
	s, _ := openTemp(t, Options{})
	ctx := context.Background()
	appendN(t, s, "f.s", 3)
	recs, _ := s.Lease("f.s", 3, -1)
	if err := s.PutHold(ctx, "f.s", pipeline.Hold{Seq: recs[0].Seq, Key: "k", State: pipeline.HoldInDoubt}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMark(ctx, "f.s", recs[1].Seq, []byte("sending")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeadLetter(ctx, "f.s", []Dead{{Seq: recs[0].Seq, Reason: "held"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Purge(ctx, "f.s", PurgeStream, nil); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "f.s", 2)
	fresh, _ := s.Lease("f.s", 2, -1)
	if fresh[0].Seq <= recs[2].Seq {
		t.Fatalf("first seq after the purge = %d, want above %d", fresh[0].Seq, recs[2].Seq)
	}
	for _, r := range fresh {
		st, err := s.RecordState("f.s", r.Seq, r.Key)
		if err != nil || st.Mark != nil || st.Hold != nil || st.KeyHolder != nil {
			t.Errorf("new record %d inherited %+v (%v)", r.Seq, st, err)
		}
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestMarksGoWithTheirRecord: the queue deletes a record's mark in the
// transaction that acks, dead-letters or purges it; a hold survives the
// dead letter until it is released.
func TestMarksGoWithTheirRecord(t *testing.T) {
	s, _ := openTemp(t, Options{})
	ctx := context.Background()
	appendN(t, s, "f.s", 3)
	recs, _ := s.Lease("f.s", 3, -1)
	for _, r := range recs {
		if err := s.SetMark(ctx, "f.s", r.Seq, []byte("sending")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutHold(ctx, "f.s", pipeline.Hold{Seq: recs[1].Seq, Key: "k", State: pipeline.HoldInDoubt}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, "f.s", []uint64{recs[0].Seq}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeadLetter(ctx, "f.s", []Dead{{Seq: recs[1].Seq, Reason: "held"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Purge(ctx, "f.s", PurgeItems, []uint64{recs[2].Seq}); err != nil {
		t.Fatal(err)
	}
	if marks, _ := s.Marks("f.s"); len(marks) != 0 {
		t.Errorf("marks left: %v", marks)
	}
	if holds, _ := s.Holds("f.s"); len(holds) != 1 || holds[0].Seq != recs[1].Seq {
		t.Errorf("holds %+v, want the dead-lettered held record's", holds)
	}
	if err := s.SetMark(ctx, "f.s", recs[0].Seq, []byte("sending")); !errors.Is(err, ErrNoRecord) {
		t.Errorf("SetMark on an acked record = %v, want ErrNoRecord", err)
	}
	if n, err := s.Replay(ctx, "f.s", []uint64{1}); !errors.Is(err, ErrHeld) || n != 0 {
		t.Errorf("replay of a held dead letter = %d, %v; want ErrHeld", n, err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestReleaseRequeuesInOrder: releasing a held record puts it, the records
// parked behind it and its key's later queued records back at the end of
// the stream in their original order, and removes the holds, in one step.
func TestReleaseRequeuesInOrder(t *testing.T) {
	for _, drop := range []bool{false, true} {
		t.Run(fmt.Sprintf("drop=%v", drop), func(t *testing.T) {
			s, _ := openTemp(t, Options{})
			ctx := context.Background()
			// k: 1 held, 2 parked, 4 still queued; other: 3.
			var es []Entry
			for i, k := range []string{"k", "k", "other", "k"} {
				es = append(es, Entry{Stream: "f.s", Record: rec(k, i+1)})
			}
			if _, err := s.Append(ctx, es); err != nil {
				t.Fatal(err)
			}
			recs, _ := s.Lease("f.s", 4, -1)
			if err := s.PutHold(ctx, "f.s", pipeline.Hold{Seq: 1, Key: "k", State: pipeline.HoldInDoubt}); err != nil {
				t.Fatal(err)
			}
			if err := s.PutHold(ctx, "f.s", pipeline.Hold{Seq: 2, Key: "k", State: pipeline.HoldParked, Behind: 1}); err != nil {
				t.Fatal(err)
			}
			if err := s.DeadLetter(ctx, "f.s", []Dead{{Seq: 1, Reason: "held"}, {Seq: 2, Reason: "parked"}}); err != nil {
				t.Fatal(err)
			}
			if err := s.Ack(ctx, "f.s", []uint64{recs[2].Seq}); err != nil {
				t.Fatal(err)
			}
			s.Nack("f.s", []uint64{4})
			if _, err := s.Release(ctx, "f.s", []uint64{2}, drop, "dropped"); !errors.Is(err, ErrUnknownHold) {
				t.Fatalf("release of a parked record = %v, want ErrUnknownHold", err)
			}
			res, err := s.Release(ctx, "f.s", nil, drop, "dropped")
			if err != nil {
				t.Fatal(err)
			}
			want := "1,2,4"
			if drop {
				want = "2,4"
			}
			left, _ := s.List("f.s", 0, 0)
			var order []string
			for _, r := range left {
				order = append(order, fmt.Sprint(r.Fields["n"]))
			}
			if got := strings.Join(order, ","); got != want {
				t.Errorf("queued after release: %s, want %s (%+v)", got, want, res)
			}
			if holds, _ := s.Holds("f.s"); len(holds) != 0 {
				t.Errorf("holds left %+v", holds)
			}
			dead, _ := s.ListDead("f.s", 0, 0)
			if drop && (len(dead) != 1 || dead[0].Reason != "dropped") || !drop && len(dead) != 0 {
				t.Errorf("dead letters %+v", dead)
			}
			if err := s.Check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestConflictIsDeadLetteredWithBothVersions: a second message with a
// known id and different content is a conflict, not a duplicate.
func TestConflictIsDeadLetteredWithBothVersions(t *testing.T) {
	s, _ := openTemp(t, Options{})
	ctx := context.Background()
	msg := func(good int) pipeline.Record {
		raw := fmt.Sprintf(`{"order":"P1","good":%d,"msg_id":"m-1"}`, good)
		return pipeline.Record{Key: "P1", ID: "m-1", Raw: []byte(raw), Fields: map[string]any{"good": good}}
	}
	if _, err := s.Append(ctx, []Entry{{Stream: "f.s", Record: msg(5)}}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Append(ctx, []Entry{{Stream: "f.s", Record: msg(5)}})
	if err != nil || res.Duplicates != 1 || len(res.Conflicts) != 0 {
		t.Fatalf("same content again = %+v, %v; want a duplicate", res, err)
	}
	res, err = s.Append(ctx, []Entry{{Stream: "f.s", Record: msg(7)}})
	if err != nil || res.Duplicates != 0 || len(res.Conflicts) != 1 || res.Seqs[0] != 0 {
		t.Fatalf("other content = %+v, %v; want a conflict", res, err)
	}
	dead, _ := s.ListDead("f.s", 0, 0)
	if len(dead) != 1 || !strings.HasPrefix(dead[0].Reason, "conflict") || !strings.Contains(string(dead[0].Record.Raw), `"good":7`) {
		t.Fatalf("dead letters %+v", dead)
	}
	first, _ := dead[0].Record.Meta["conflict_first_version"].(map[string]any)
	if raw, _ := first["raw"].(string); !strings.Contains(raw, `"good":5`) {
		t.Errorf("first version kept as %v", first)
	}
	// Once the first version is delivered, the conflict still shows it.
	recs, _ := s.Lease("f.s", 1, -1)
	if err := s.Ack(ctx, "f.s", []uint64{recs[0].Seq}); err != nil {
		t.Fatal(err)
	}
	if res, _ := s.Append(ctx, []Entry{{Stream: "f.s", Record: msg(8)}}); len(res.Conflicts) != 1 {
		t.Fatalf("conflict after delivery = %+v", res)
	}
	dead, _ = s.ListDead("f.s", 0, 0)
	first, _ = dead[1].Record.Meta["conflict_first_version"].(map[string]any)
	if raw, _ := first["raw"].(string); !strings.Contains(raw, `"good":5`) || first["state"] != "delivered or dead-lettered" {
		t.Errorf("first version after delivery kept as %v", first)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestSourceDeadLettersAreDeduplicatedByID: a redelivered message that
// fails again does not become a second dead letter.
func TestSourceDeadLettersAreDeduplicatedByID(t *testing.T) {
	s, _ := openTemp(t, Options{})
	ctx := context.Background()
	bad := pipeline.Record{Raw: []byte("{bad"), ID: "dl:1"}
	for i, want := range []int{0, 1} {
		skipped, err := s.AddDead(ctx, "_source.mes", []pipeline.Record{bad}, []string{"decode"})
		if err != nil || skipped != want {
			t.Fatalf("AddDead %d = %d, %v; want %d skipped", i, skipped, err, want)
		}
	}
	if dead, _ := s.ListDead("_source.mes", 0, 0); len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
}

// TestLockFileHeldForTheStoresLife: a second store cannot open the queue
// while the first is open, including right after a compaction at Open
// replaced the bbolt file.
func TestLockFileHeldForTheStoresLife(t *testing.T) {
	s, path := openTemp(t, Options{})
	appendN(t, s, "f.s", 200)
	recs, _ := s.Lease("f.s", 200, -1)
	if err := s.Ack(context.Background(), "f.s", seqsOf(recs)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path, Options{CompactMinBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := Open(path, Options{OpenTimeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open after a compaction = %v, want ErrLocked", err)
	}
}

// TestSchemaMigratesForwardAndRefusesNewer: a version 1 file is migrated,
// a file of a newer version is refused with a clear message.
func TestSchemaMigratesForwardAndRefusesNewer(t *testing.T) {
	s, path := openTemp(t, Options{})
	appendN(t, s, "f.s", 1)
	setVersion := func(v uint64) {
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, itob(v)) }); err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
	}
	_ = s.Close()
	setVersion(1)
	s1, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("open a version 1 file: %v", err)
	}
	if recs, _ := s1.List("f.s", 0, 0); len(recs) != 1 {
		t.Errorf("records after the migration: %d", len(recs))
	}
	_ = s1.Close()
	setVersion(SchemaVersion + 1)
	if _, err := Open(path, Options{}); !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), "newer plantgate") {
		t.Fatalf("open a newer file = %v, want ErrSchema naming a newer plantgate", err)
	}
}

// TestKeyPendingFollowsTheStream: a tracked stream's pending records per
// key follow appends, acks, dead letters, replays and purges, and match a
// count from the file.
func TestKeyPendingFollowsTheStream(t *testing.T) {
	s, _ := openTemp(t, Options{})
	ctx := context.Background()
	var es []Entry
	for i, k := range []string{"a", "a", "b", "c", "a", "b"} {
		es = append(es, Entry{Stream: "f.s", Record: rec(k, i)})
	}
	if _, err := s.Append(ctx, es[:2]); err != nil {
		t.Fatal(err)
	}
	if err := s.TrackKeys(ctx, "f.s"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, es[2:]); err != nil {
		t.Fatal(err)
	}
	want := func(k string, n int) {
		t.Helper()
		if got := s.KeyPending("f.s", k); got != n {
			t.Errorf("KeyPending(%s) = %d, want %d", k, got, n)
		}
	}
	want("a", 3)
	want("b", 2)
	recs, _ := s.Lease("f.s", 6, -1)
	if err := s.Ack(ctx, "f.s", []uint64{recs[0].Seq}); err != nil { // a
		t.Fatal(err)
	}
	if err := s.DeadLetter(ctx, "f.s", []Dead{{Seq: recs[2].Seq, Reason: "x"}}); err != nil { // b
		t.Fatal(err)
	}
	want("a", 2)
	want("b", 1)
	if _, err := s.Replay(ctx, "f.s", nil); err != nil {
		t.Fatal(err)
	}
	want("b", 2)
	if _, err := s.Purge(ctx, "f.s", PurgeItems, []uint64{recs[3].Seq}); err != nil { // c
		t.Fatal(err)
	}
	want("c", 0)
	// The same counts from the file.
	all, _ := s.List("f.s", 0, 0)
	counts := map[string]int{}
	for _, r := range all {
		counts[r.Key]++
	}
	for k, n := range counts {
		want(k, n)
	}
}
