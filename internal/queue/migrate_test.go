package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// oldReleaseFile is a queue file plantgate 988854f wrote (schema version
// 1); cmd/plantgate/testdata/upgrade-v1/README.md says how.
const oldReleaseFile = "../../cmd/plantgate/testdata/upgrade-v1/queue.db"

func copyOldRelease(t *testing.T) (string, []byte) {
	t.Helper()
	b, err := os.ReadFile(oldReleaseFile)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "queue.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, b
}

// fileSchema reads the schema version and which streams lack a bucket of
// version 2, straight from the file.
func fileSchema(t *testing.T, path string) (uint64, []string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v uint64
	var lacking []string
	_ = db.View(func(tx *bolt.Tx) error {
		v = binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keySchema))
		return tx.Bucket(bucketStreams).ForEachBucket(func(name []byte) error {
			b := tx.Bucket(bucketStreams).Bucket(name)
			for _, sb := range [][]byte{bucketMarks, bucketHeld, bucketHeldKey} {
				if b.Bucket(sb) == nil {
					lacking = append(lacking, string(name)+"/"+string(sb))
				}
			}
			return nil
		})
	})
	return v, lacking
}

// TestMigrateCrashHelper is not a test: TestSchemaMigrationIsOneTransaction
// runs the test binary again with PLANTGATE_QUEUE_MIGRATE_HELPER set to a
// version 1 file, and this function opens it and is killed (SIGKILL) in
// the middle of the migration's transaction, after its first stream.
func TestMigrateCrashHelper(t *testing.T) {
	path := os.Getenv("PLANTGATE_QUEUE_MIGRATE_HELPER")
	if path == "" {
		t.Skip("helper process for TestSchemaMigrationIsOneTransaction")
	}
	migrateHook = func(string) { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL) }
	_, err := Open(path, Options{})
	t.Fatalf("open returned (%v) instead of the process being killed", err)
}

// TestSchemaMigrationIsOneTransaction: the previous release's file is
// migrated to version 2 in one transaction. Killed in the middle of it,
// the file stays exactly as the old release wrote it (which that release
// and this one both read); opened again, it is migrated whole: version 2
// and every stream with the buckets version 2 keeps beside its records,
// and the records, dead letters and state all there.
func TestSchemaMigrationIsOneTransaction(t *testing.T) {
	path, orig := copyOldRelease(t)
	if v, lacking := fileSchema(t, path); v != 1 || len(lacking) == 0 {
		t.Fatalf("old release's file: schema %d, lacking %v; want 1 and the version 2 buckets missing", v, lacking)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMigrateCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PLANTGATE_QUEUE_MIGRATE_HELPER="+path)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper: %v, want it killed in the migration\n%s", err, out)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after, orig) {
		t.Fatalf("the file changed although its migration was killed before its commit")
	}
	if v, _ := fileSchema(t, path); v != 1 {
		t.Fatalf("schema after the killed migration: %d, want 1", v)
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("open after the killed migration: %v", err)
	}
	stats, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if stats.Records != 8 || stats.Dead != 5 {
		t.Errorf("after the migration: %d records, %d dead letters; want the old release's 8 and 5", stats.Records, stats.Dead)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if offset, ok, _ := s.GetState("source.mes", "offset"); !ok || len(offset) == 0 {
		names, _ := s.ListState("source.mes")
		t.Errorf("the file source's state is gone after the migration: %v", names)
	}
	_ = s.Close()
	if v, lacking := fileSchema(t, path); v != SchemaVersion || len(lacking) != 0 {
		t.Fatalf("after the migration: schema %d, lacking %v; want %d and nothing lacking", v, lacking, SchemaVersion)
	}
}

// TestOpenRefusesNewerSchema: a file of a newer version is refused by a
// writer and by a read-only look alike, saying a newer plantgate wrote it;
// a version 1 file opened read-only says the gateway migrates it.
func TestOpenRefusesNewerSchema(t *testing.T) {
	path, _ := copyOldRelease(t)
	if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), "written by an older plantgate; this one migrates it when the gateway starts") {
		t.Errorf("read-only open of a version 1 file: %v", err)
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, itob(SchemaVersion+1)) }); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	before, _ := os.ReadFile(path)
	for _, ro := range []bool{false, true} {
		_, err := Open(path, Options{ReadOnly: ro})
		if !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), "the file has version 3, written by a newer plantgate; this one reads up to version 2") {
			t.Errorf("open (read-only %v) of a version 3 file: %v", ro, err)
		}
	}
	if _, _, err := Compact(path, Options{}); !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), "written by a newer plantgate") {
		t.Errorf("compact of a version 3 file: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Errorf("refusing a newer file changed it")
	}
}

// TestMergeStreams: the streams of a sink's flows merged into the sink's
// one stream keep each key's order, interleaved by when the records were
// queued, behind nothing of the destination that was queued later; holds,
// parked records and marks follow their records; ids stay known; the old
// streams are gone and a stream of that name created again never reuses
// a sequence.
func TestMergeStreams(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { now = now.Add(time.Millisecond); return now }
	s, _ := openTemp(t, Options{Now: clock})
	ctx := context.Background()
	add := func(stream, key, id string) uint64 {
		t.Helper()
		res, err := s.Append(ctx, []Entry{{Stream: stream, Record: pipeline.Record{Key: key, ID: id, Fields: map[string]any{"id": id}}}})
		if err != nil || len(res.Seqs) != 1 || res.Seqs[0] == 0 {
			t.Fatalf("append %s: %+v %v", id, res, err)
		}
		return res.Seqs[0]
	}
	add("a.mes", "P1", "a1") // a seq 1
	add("b.mes", "P1", "b1") // b seq 1
	a2 := add("a.mes", "P2", "a2")
	add("a.mes", "P2", "a3") // parked behind a2
	add("b.mes", "P1", "b2") // in flight: marked
	add("mes", "P3", "m1")   // already in the destination, queued last
	a4 := add("a.mes", "P2", "a4")
	// As the in-doubt policy does: hold the record and the next of its
	// key, then make them dead letters (the holds stay beside them).
	if err := s.PutHold(ctx, "a.mes", pipeline.Hold{Seq: a2, Key: "P2", State: pipeline.HoldInDoubt, Sink: "mes"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutHold(ctx, "a.mes", pipeline.Hold{Seq: a2 + 1, Key: "P2", State: pipeline.HoldParked, Behind: a2, Sink: "mes"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeadLetter(ctx, "a.mes", []Dead{{Seq: a2, Reason: "in doubt"}, {Seq: a2 + 1, Reason: "parked"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMark(ctx, "b.mes", 2, []byte("sending")); err != nil {
		t.Fatal(err)
	}
	flows := map[string]string{}
	n, err := s.MergeStreams(ctx, "mes", []string{"a.mes", "b.mes", "gone.mes"}, func(st string) string {
		flows[st] = strings.TrimSuffix(st, ".mes")
		return flows[st]
	})
	if err != nil || n != 6 {
		t.Fatalf("merge = %d, %v; want 4 records and 2 dead letters moved", n, err)
	}
	recs, _ := s.List("mes", 0, 0)
	var got []string
	for _, r := range recs {
		got = append(got, r.Fields["id"].(string)+"/"+r.Flow)
	}
	// a1 b1 [a2 a3 dead] b2 m1 a4: by when they were queued.
	if strings.Join(got, " ") != "a1/a b1/b b2/b m1/ a4/a" {
		t.Errorf("merged order %v", got)
	}
	byID := map[string]uint64{}
	for _, r := range recs {
		byID[r.Fields["id"].(string)] = r.Seq
	}
	dead, _ := s.ListDead("mes", 0, 0)
	if len(dead) != 2 || dead[0].Record.Fields["id"] != "a2" || dead[1].Record.Fields["id"] != "a3" || dead[0].Record.Flow != "a" {
		t.Fatalf("merged dead letters %+v", dead)
	}
	holder := dead[0].OrigSeq
	if inOrder := byID["b1"] < holder && holder < dead[1].OrigSeq && dead[1].OrigSeq < byID["b2"] && byID["m1"] < byID["a4"]; !inOrder {
		t.Errorf("sequences: %v, held %d, parked %d", byID, holder, dead[1].OrigSeq)
	}
	st, err := s.RecordState("mes", byID["a4"], "P2")
	if err != nil || st.KeyHolder == nil || st.KeyHolder.Seq != holder {
		t.Errorf("a4 after the merge: %+v %v; want it held back by %d", st, err, holder)
	}
	if st, _ := s.RecordState("mes", byID["b2"], "P1"); string(st.Mark) != "sending" {
		t.Errorf("b2's mark after the merge: %q", st.Mark)
	}
	if res, _ := s.Append(ctx, []Entry{{Stream: "mes", Record: pipeline.Record{Key: "P1", ID: "b1", Fields: map[string]any{"id": "b1"}}}}); res.Duplicates != 1 {
		t.Errorf("an id of b.mes appended to mes after the merge: %+v, want a duplicate", res)
	}
	// Releasing the holder sends it, the parked record and the key's later
	// record a4, in that order.
	rr, err := s.Release(ctx, "mes", []uint64{holder}, false, "")
	if err != nil || rr.Requeued != 3 {
		t.Fatalf("release = %+v, %v", rr, err)
	}
	recs, _ = s.List("mes", 0, 0)
	got = got[:0]
	for _, r := range recs {
		got = append(got, r.Fields["id"].(string))
	}
	if strings.Join(got, " ") != "a1 b1 b2 m1 a2 a3 a4" {
		t.Errorf("after the release %v", got)
	}
	for _, name := range s.Streams() {
		if name == "a.mes" || name == "b.mes" {
			t.Errorf("stream %s left after the merge", name)
		}
	}
	if seq := add("a.mes", "P9", "again"); seq <= a4 {
		t.Errorf("a.mes created again starts at seq %d, reusing the merged stream's (up to %d)", seq, a4)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if n, err := s.MergeStreams(ctx, "mes", []string{"b.mes"}, nil); n != 0 || err != nil {
		t.Errorf("merging again = %d, %v; want nothing to do", n, err)
	}
	stats, _ := s.Stats()
	for _, ss := range stats.Streams {
		if ss.Stream == "mes" && (ss.Records != 7 || ss.Dead != 0) {
			t.Errorf("mes counters %+v, want 7 records, no dead letters", ss)
		}
	}
}
