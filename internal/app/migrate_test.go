package app

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// TestMigrateSinkState: in-doubt bookkeeping an older plantgate kept in a
// sink's state (markers and the held index) moves into the queue's marks
// and holds once, so a message in flight or held before the upgrade is
// neither sent twice nor released by accident.
func TestMigrateSinkState(t *testing.T) {
	s, err := queue.Open(filepath.Join(t.TempDir(), "queue.db"), queue.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var es []queue.Entry
	for _, k := range []string{"P1", "P1", "P2"} {
		es = append(es, queue.Entry{Stream: "start.mes", Record: pipeline.Record{Key: k, Fields: map[string]any{"k": k}}})
	}
	if _, err := s.Append(ctx, es); err != nil {
		t.Fatal(err)
	}
	// The old layout: seq 1 held (already a dead letter), seq 3 in flight,
	// and a marker of a record acked long ago.
	if err := s.DeadLetter(ctx, "start.mes", []queue.Dead{{Seq: 1, Reason: d365.ReasonHeldPrefix}}); err != nil {
		t.Fatal(err)
	}
	idx := fmt.Sprintf(`{"records":[{"stream":"start.mes","seq":1,"key":"P1","state":"held","since":%q}]}`, time.Now().UTC().Format(time.RFC3339))
	scope := flow.SinkStateScope("mes")
	marker := []byte(`{"state":"sending","at":"2026-01-01T00:00:00Z"}`)
	if err := s.PutState(ctx,
		queue.StateWrite{Scope: scope, Name: d365.HeldIndexName, Value: []byte(idx)},
		queue.StateWrite{Scope: scope, Name: "m/start.mes/00000000000000000003", Value: marker},
		queue.StateWrite{Scope: scope, Name: "m/start.mes/00000000000000000099", Value: marker},
	); err != nil {
		t.Fatal(err)
	}
	n, err := MigrateSinkState(ctx, s, "mes")
	if err != nil || n != 3 {
		t.Fatalf("migrate = %d, %v", n, err)
	}
	st, err := s.RecordState("start.mes", 2, "P1")
	if err != nil || st.KeyHolder == nil || st.KeyHolder.Seq != 1 {
		t.Errorf("P1's seq 2 after the migration: %+v, %v; want it held back by seq 1", st, err)
	}
	if st, _ := s.RecordState("start.mes", 3, "P2"); d365.DecodeMarker(st.Mark).State != d365.MarkerSending || st.Mark == nil {
		t.Errorf("seq 3's marker after the migration: %q", st.Mark)
	}
	if left, _ := s.ListState(scope); len(left) != 0 {
		t.Errorf("old state left: %v", left)
	}
	if n, err := MigrateSinkState(ctx, s, "mes"); n != 0 || err != nil {
		t.Errorf("second migration = %d, %v; want nothing to do", n, err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
