package queue

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/pipeline"
)

func openTemp(t testing.TB, o Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "queue.db")
	s, err := Open(path, o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func rec(key string, i int) pipeline.Record {
	return pipeline.Record{Key: key, ID: fmt.Sprintf("%s-%d", key, i), Fields: map[string]any{"n": i}}
}

// bigRec is a record of about 1 KiB.
func bigRec(key string, i int) pipeline.Record {
	r := rec(key, i)
	r.Fields["pad"] = strings.Repeat("x", 1000)
	return r
}

func appendN(t testing.TB, s *Store, stream string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := s.Append(context.Background(), []Entry{{Stream: stream, Record: rec("k", i)}}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

func TestAppendLeaseAckFIFO(t *testing.T) {
	s, _ := openTemp(t, Options{})
	ctx := context.Background()
	appendN(t, s, "f.s", 10)
	got, err := s.Lease("f.s", 4, -1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0].Seq != 1 || got[3].Seq != 4 {
		t.Fatalf("lease got %d records starting at %d, want 4 starting at 1", len(got), got[0].Seq)
	}
	if n := got[2].Fields["n"]; fmt.Sprint(n) != "2" {
		t.Fatalf("field n = %v, want 2", n)
	}
	// Leased records are not offered again.
	next, _ := s.Lease("f.s", 100, -1)
	if len(next) != 6 || next[0].Seq != 5 {
		t.Fatalf("second lease got %d from %d, want 6 from 5", len(next), next[0].Seq)
	}
	if err := s.Ack(ctx, "f.s", []uint64{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	s.Nack("f.s", []uint64{5, 6, 7, 8, 9, 10})
	again, _ := s.Lease("f.s", 100, -1)
	if len(again) != 6 || again[0].Seq != 5 {
		t.Fatalf("after nack got %d from %d, want 6 from 5", len(again), again[0].Seq)
	}
	st, _ := s.Stats()
	if st.Records != 6 || st.Streams[0].Leased != 6 {
		t.Fatalf("stats records=%d leased=%d, want 6 and 6", st.Records, st.Streams[0].Leased)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("check: %v", err)
	}
}

func TestLeaseExpires(t *testing.T) {
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, _ := openTemp(t, Options{Now: clock, LeaseTimeout: time.Minute})
	appendN(t, s, "a.b", 2)
	if got, _ := s.Lease("a.b", 10, 0); len(got) != 2 {
		t.Fatalf("lease got %d, want 2", len(got))
	}
	if got, _ := s.Lease("a.b", 10, 0); len(got) != 0 {
		t.Fatalf("lease while held got %d, want 0", len(got))
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if got, _ := s.Lease("a.b", 10, 0); len(got) != 2 {
		t.Fatalf("lease after expiry got %d, want 2", len(got))
	}
}

func TestReopenRedeliversUnackedExactlyOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "f.s", 5)
	got, _ := s.Lease("f.s", 5, -1)
	if err := s.Ack(context.Background(), "f.s", []uint64{got[0].Seq, got[1].Seq}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	again, _ := s.Lease("f.s", 100, -1)
	var seqs []uint64
	for _, r := range again {
		seqs = append(seqs, r.Seq)
	}
	if fmt.Sprint(seqs) != "[3 4 5]" {
		t.Fatalf("after reopen got %v, want [3 4 5]", seqs)
	}
}

func TestDedupWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, _ := openTemp(t, Options{Now: clock, DedupWindow: time.Hour})
	ctx := context.Background()
	r := pipeline.Record{ID: "msg-1", Key: "k"}
	res, err := s.Append(ctx, []Entry{{Stream: "f.s", Record: r}, {Stream: "f.s", Record: r}, {Stream: "g.s", Record: r}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicates != 1 || res.Seqs[1] != 0 || res.Seqs[2] == 0 {
		t.Fatalf("dedup in one append: %+v, want the second entry skipped only", res)
	}
	res, _ = s.Append(ctx, []Entry{{Stream: "f.s", Record: r}})
	if res.Duplicates != 1 {
		t.Fatalf("repeat within window: duplicates=%d, want 1", res.Duplicates)
	}
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	s.PruneIDs()
	res, _ = s.Append(ctx, []Entry{{Stream: "f.s", Record: r}})
	if res.Duplicates != 0 {
		t.Fatalf("after window: duplicates=%d, want 0", res.Duplicates)
	}
	st, _ := s.Stats()
	if st.Records != 3 {
		t.Fatalf("records=%d, want 3", st.Records)
	}
}

func TestDeadLetterReplayPurge(t *testing.T) {
	s, _ := openTemp(t, Options{})
	ctx := context.Background()
	appendN(t, s, "f.s", 3)
	if err := s.DeadLetter(ctx, "f.s", []Dead{{Seq: 2, Reason: "Write failed for table row", Attempts: 3}}); err != nil {
		t.Fatal(err)
	}
	dead, err := s.ListDead("f.s", 0, 10)
	if err != nil || len(dead) != 1 {
		t.Fatalf("dead = %v, %v; want one", dead, err)
	}
	if dead[0].Reason != "Write failed for table row" || dead[0].OrigSeq != 2 || dead[0].Attempts != 3 {
		t.Fatalf("dead letter = %+v", dead[0])
	}
	if _, err := s.AddDead(ctx, "src.mes", []pipeline.Record{{Raw: []byte("{bad")}}, []string{"decode json: unexpected EOF"}); err != nil {
		t.Fatal(err)
	}
	sd, _ := s.ListDead("src.mes", 0, 10)
	if len(sd) != 1 || string(sd[0].Record.Raw) != "{bad" {
		t.Fatalf("source dead letter = %+v, want raw bytes kept", sd)
	}
	n, err := s.Replay(ctx, "f.s", nil)
	if err != nil || n != 1 {
		t.Fatalf("replay = %d, %v; want 1", n, err)
	}
	items, _ := s.List("f.s", 0, 10)
	if len(items) != 3 || items[2].Seq != 4 || fmt.Sprint(items[2].Fields["n"]) != "1" {
		t.Fatalf("after replay items = %+v", items)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("check: %v", err)
	}
	n, err = s.Purge(ctx, "f.s", PurgeItems, nil)
	if err != nil || n != 3 {
		t.Fatalf("purge = %d, %v; want 3", n, err)
	}
	st, _ := s.Stats()
	if st.Records != 0 || st.Dead != 1 {
		t.Fatalf("stats after purge records=%d dead=%d, want 0 and 1", st.Records, st.Dead)
	}
	if _, err := s.Purge(ctx, "src.mes", PurgeStream, nil); err != nil {
		t.Fatal(err)
	}
	if got := s.Streams(); fmt.Sprint(got) != "[f.s]" {
		t.Fatalf("streams = %v, want [f.s]", got)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("check: %v", err)
	}
}

func TestQuotaBlockAndReject(t *testing.T) {
	t.Run("reject", func(t *testing.T) {
		s, _ := openTemp(t, Options{MaxBytes: 128 << 10, OnFull: Reject})
		ctx := context.Background()
		var err error
		for i := 0; i < 1000 && err == nil; i++ {
			_, err = s.Append(ctx, []Entry{{Stream: "f.s", Record: bigRec("k", i)}})
		}
		if !errors.Is(err, ErrFull) {
			t.Fatalf("got %v, want ErrFull", err)
		}
	})
	t.Run("block", func(t *testing.T) {
		s, _ := openTemp(t, Options{MaxBytes: 128 << 10, OnFull: Block})
		ctx := context.Background()
		appended := 0
		for {
			c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			_, err := s.Append(c, []Entry{{Stream: "f.s", Record: bigRec("k", appended)}})
			cancel()
			if err != nil {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("got %v, want a deadline while blocked", err)
				}
				break
			}
			appended++
		}
		st, _ := s.Stats()
		if !st.Full {
			t.Fatalf("stats.Full = false while blocked")
		}
		done := make(chan error, 1)
		go func() {
			_, err := s.Append(ctx, []Entry{{Stream: "f.s", Record: bigRec("k", 999)}})
			done <- err
		}()
		select {
		case err := <-done:
			t.Fatalf("append returned %v while the queue was full", err)
		case <-time.After(50 * time.Millisecond):
		}
		// Free half the records: their pages return to bbolt's freelist.
		got, _ := s.Lease("f.s", appended/2, -1)
		if err := s.Ack(ctx, "f.s", seqsOf(got)); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("blocked append after ack: %v", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		s, _ := openTemp(t, Options{MaxRecordBytes: 100})
		_, err := s.Append(context.Background(), []Entry{{Stream: "f.s", Record: pipeline.Record{Raw: make([]byte, 200)}}})
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("got %v, want ErrTooLarge", err)
		}
	})
}

func TestStateSharesTransaction(t *testing.T) {
	s, path := openTemp(t, Options{})
	ctx := context.Background()
	_, err := s.Append(ctx, []Entry{{Stream: "f.s", Record: rec("k", 1)}}, StateWrite{Scope: "opcua.line3", Name: "good_count", Value: []byte("41")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s.Lease("f.s", 1, -1)
	if err := s.Ack(ctx, "f.s", []uint64{got[0].Seq}, StateWrite{Scope: "fo.mes", Name: "inflight/1", Delete: true}); err != nil {
		t.Fatal(err)
	}
	st := s.Scope("dmf.picking")
	if err := st.Put(ctx, "batch", []byte(`{"step":"uploaded"}`)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	v, ok, err := s2.GetState("opcua.line3", "good_count")
	if err != nil || !ok || string(v) != "41" {
		t.Fatalf("state = %q %v %v, want 41", v, ok, err)
	}
	v, ok, _ = s2.Scope("dmf.picking").Get("batch")
	if !ok || string(v) != `{"step":"uploaded"}` {
		t.Fatalf("scoped state = %q %v", v, ok)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	_, path := openTemp(t, Options{})
	start := time.Now()
	_, err := Open(path, Options{OpenTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("second open took %s", time.Since(start))
	}
}

func TestCompactDrainedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	big := make([]Entry, 200)
	for i := range big {
		big[i] = Entry{Stream: "f.s", Record: pipeline.Record{Raw: make([]byte, 4096)}}
	}
	for i := 0; i < 10; i++ {
		if _, err := s.Append(ctx, big); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Purge(ctx, "f.s", PurgeItems, nil); err != nil {
		t.Fatal(err)
	}
	before := s.FileSize()
	_ = s.Close()
	s, err = Open(path, Options{CompactMinBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	after := s.FileSize()
	if after*2 > before {
		t.Fatalf("file %d bytes before, %d after compaction; want at least halved", before, after)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "f.s", 1)
}

func TestConcurrentAppendersShareCommits(t *testing.T) {
	s, _ := openTemp(t, Options{})
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if _, err := s.Append(context.Background(), []Entry{{Stream: "f.s", Record: rec(fmt.Sprint(g), i)}}); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	st, _ := s.Stats()
	if st.Records != 800 {
		t.Fatalf("records = %d, want 800", st.Records)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	r := pipeline.Record{Key: "P000123", ID: "m-1", Source: "mes", Time: time.Unix(0, 1234).UTC(),
		Fields: map[string]any{"qty": 12.5, "item": "M0001"}, Meta: map[string]any{"topic": "mes/x"}, Raw: []byte{0, 1, 2}}
	b, err := encodeEnvelope(envelopeOf(&r, time.Unix(5, 0)))
	if err != nil {
		t.Fatal(err)
	}
	e, err := decodeEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	got := e.record("f.s", 7)
	if got.Key != r.Key || got.ID != r.ID || !got.Time.Equal(r.Time) || string(got.Raw) != string(r.Raw) ||
		fmt.Sprint(got.Fields["qty"]) != "12.5" || got.Meta["topic"] != "mes/x" {
		t.Fatalf("round trip got %+v, want %+v", got, r)
	}
}

func TestLeaseHintKeepsEveryRecordReachable(t *testing.T) {
	s, _ := openTemp(t, Options{})
	ctx := context.Background()
	appendN(t, s, "f.s", 20)
	a, _ := s.Lease("f.s", 5, -1) // 1-5
	b, _ := s.Lease("f.s", 5, -1) // 6-10
	if b[0].Seq != 6 {
		t.Fatalf("second lease starts at %d, want 6", b[0].Seq)
	}
	_ = s.Ack(ctx, "f.s", []uint64{a[0].Seq, a[1].Seq}) // 1, 2 gone
	s.Nack("f.s", []uint64{a[3].Seq})                   // 4 offered again
	c, _ := s.Lease("f.s", 3, -1)
	if fmt.Sprint(seqsOf(c)) != "[4 11 12]" {
		t.Fatalf("after ack and nack got %v, want [4 11 12]", seqsOf(c))
	}
	// An expiring lease forces a full scan until it is gone.
	d, _ := s.Lease("f.s", 1, time.Nanosecond) // 13, expires at once
	if d[0].Seq != 13 {
		t.Fatalf("got %d, want 13", d[0].Seq)
	}
	e, _ := s.Lease("f.s", 2, -1)
	if fmt.Sprint(seqsOf(e)) != "[13 14]" {
		t.Fatalf("after expiry got %v, want [13 14]", seqsOf(e))
	}
	s.Nack("f.s", seqsOf(b))
	f, _ := s.Lease("f.s", 100, -1)
	if fmt.Sprint(seqsOf(f)) != "[6 7 8 9 10 15 16 17 18 19 20]" {
		t.Fatalf("final lease %v", seqsOf(f))
	}
}

func seqsOf(rs []pipeline.Record) []uint64 {
	out := make([]uint64, len(rs))
	for i, r := range rs {
		out[i] = r.Seq
	}
	return out
}
