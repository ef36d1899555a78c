package queue_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

func Example() {
	dir, _ := os.MkdirTemp("", "queue-example")
	defer os.RemoveAll(dir)
	s, err := queue.Open(filepath.Join(dir, "queue.db"), queue.Options{})
	if err != nil {
		panic(err)
	}
	defer s.Close()
	ctx := context.Background()

	// Append returns after the fsync'd commit: only now may a source ack.
	_, _ = s.Append(ctx, []queue.Entry{{Stream: "finished.mes", Record: pipeline.Record{Key: "P000123", ID: "msg-1"}}})

	recs, _ := s.Lease("finished.mes", 10, 0)
	fmt.Println(len(recs), recs[0].Key)
	_ = s.Ack(ctx, "finished.mes", []uint64{recs[0].Seq})

	st, _ := s.Stats()
	fmt.Println(st.Records)
	// Output:
	// 1 P000123
	// 0
}
