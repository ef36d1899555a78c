package queue

import (
	"context"
	"errors"
	"time"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// StreamQueue returns stream as a pipeline.StreamSink sees it: the states
// the sink writes beside its acks go to scope, and remap maps replayed
// records again (nil: they are refused).
func (s *Store) StreamQueue(stream, scope string, remap func(pipeline.Record) (pipeline.Record, error)) pipeline.StreamQueue {
	return &streamQueue{s: s, stream: stream, scope: scope, remap: remap}
}

type streamQueue struct {
	s      *Store
	stream string
	scope  string
	remap  func(pipeline.Record) (pipeline.Record, error)
}

func (q *streamQueue) List(after uint64, limit int) ([]pipeline.Record, error) {
	recs, err := q.s.List(q.stream, after, limit)
	if errors.Is(err, ErrUnknownStream) {
		return nil, nil
	}
	return recs, err
}

func (q *streamQueue) Pending() (int64, int64, time.Time) {
	count, size := q.s.pending(q.stream)
	if count == 0 {
		return 0, 0, time.Time{}
	}
	var oldest time.Time
	if recs, err := q.s.List(q.stream, 0, 1); err == nil && len(recs) == 1 {
		oldest = recs[0].Appended
	}
	return count, size, oldest
}

func (q *streamQueue) Wait() <-chan struct{} { return q.s.Wait(q.stream) }

func (q *streamQueue) states(ws []pipeline.StateWrite) []StateWrite {
	out := make([]StateWrite, len(ws))
	for i, w := range ws {
		out[i] = StateWrite{Scope: q.scope, Name: w.Name, Value: w.Value, Delete: w.Delete}
	}
	return out
}

func (q *streamQueue) Ack(ctx context.Context, seqs []uint64, states ...pipeline.StateWrite) error {
	ws := q.states(states)
	if len(seqs) == 0 {
		if len(ws) == 0 {
			return nil
		}
		return q.s.PutState(ctx, ws...)
	}
	return q.s.Ack(ctx, q.stream, seqs, ws...)
}

func (q *streamQueue) DeadLetter(ctx context.Context, dead []pipeline.DeadRecord, states ...pipeline.StateWrite) error {
	ws := q.states(states)
	if len(dead) == 0 {
		if len(ws) == 0 {
			return nil
		}
		return q.s.PutState(ctx, ws...)
	}
	ds := make([]Dead, len(dead))
	for i, d := range dead {
		ds[i] = Dead{Seq: d.Seq, Reason: d.Reason}
	}
	return q.s.DeadLetter(ctx, q.stream, ds, ws...)
}

func (q *streamQueue) Remap(r pipeline.Record) (pipeline.Record, error) {
	if q.remap == nil {
		return r, errors.New("replayed record: no flow to map it again")
	}
	return q.remap(r)
}
