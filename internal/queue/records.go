package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// Per-record bookkeeping (streams/<stream>/...):
//
//	marks/     seq -> value        a sink's mark of a queued record (an in-flight marker)
//	held/      seq -> Hold (JSON)  records set aside for an operator (in doubt, or parked)
//	heldkeys/  key -> seq          the in-doubt record that holds back each key
//
// Sequences are never reused within a file, so a mark or a hold can only
// ever concern the record it was written for. A mark goes in the
// transaction that acks, dead-letters or purges its record; a hold stays
// beside the record's dead letter until Release, Drop or Purge.

var _ pipeline.RecordStore = (*Store)(nil)

// SetMark durably sets the mark of a queued record of stream (value nil
// deletes it). It fails with ErrNoRecord when the record is not queued.
func (s *Store) SetMark(ctx context.Context, stream string, seq uint64, value []byte) error {
	v := bytes.Clone(value)
	return s.submit(ctx, 1, func(tx *bolt.Tx, _ *deltas) error {
		b, err := streamBucket(tx, stream, false)
		if err != nil {
			return err
		}
		if b.Bucket(bucketItems).Get(itob(seq)) == nil {
			return fmt.Errorf("%w: stream %s seq %d", ErrNoRecord, stream, seq)
		}
		mb, err := sub(b, bucketMarks, v != nil)
		if err != nil || mb == nil {
			return err
		}
		if v == nil {
			return mb.Delete(itob(seq))
		}
		return mb.Put(itob(seq), v)
	}, nil)
}

// RecordState reads the mark and holds of a record of stream, and the
// in-doubt hold of its key.
func (s *Store) RecordState(stream string, seq uint64, key string) (pipeline.RecordState, error) {
	var out pipeline.RecordState
	err := s.db.View(func(tx *bolt.Tx) error {
		b, err := streamBucket(tx, stream, false)
		if errors.Is(err, ErrUnknownStream) {
			return nil // an unknown stream keeps nothing
		} else if err != nil {
			return err
		}
		if mb := b.Bucket(bucketMarks); mb != nil {
			if v := mb.Get(itob(seq)); v != nil {
				out.Mark = bytes.Clone(v)
			}
		}
		hb := b.Bucket(bucketHeld)
		if hb == nil {
			return nil
		}
		if h, ok, err := getHold(hb, seq); err != nil {
			return err
		} else if ok {
			out.Hold = &h
		}
		if kb := b.Bucket(bucketHeldKey); kb != nil && len(key) <= MaxKeyBytes {
			if v := kb.Get([]byte(key)); len(v) == 8 {
				h, ok, err := getHold(hb, binary.BigEndian.Uint64(v))
				if err != nil {
					return err
				}
				if ok {
					out.KeyHolder = &h
				}
			}
		}
		return nil
	})
	return out, err
}

func getHold(hb *bolt.Bucket, seq uint64) (pipeline.Hold, bool, error) {
	v := hb.Get(itob(seq))
	if v == nil {
		return pipeline.Hold{}, false, nil
	}
	var h pipeline.Hold
	if err := json.Unmarshal(v, &h); err != nil {
		return pipeline.Hold{}, false, fmt.Errorf("%w: hold of seq %d: %w", ErrCorrupt, seq, err)
	}
	return h, true, nil
}

// PutHold durably sets a queued record of stream aside (h.Seq). An
// in-doubt hold (pipeline.HoldInDoubt) also holds back h.Key in stream.
// It fails with ErrNoRecord when the record is not queued.
func (s *Store) PutHold(ctx context.Context, stream string, h pipeline.Hold) error {
	if len(h.Key) > MaxKeyBytes {
		return fmt.Errorf("%w: key of %d bytes", ErrTooLarge, len(h.Key))
	}
	v, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encode hold: %w", err)
	}
	return s.submit(ctx, 1, func(tx *bolt.Tx, _ *deltas) error {
		b, err := streamBucket(tx, stream, false)
		if err != nil {
			return err
		}
		if b.Bucket(bucketItems).Get(itob(h.Seq)) == nil {
			return fmt.Errorf("%w: stream %s seq %d", ErrNoRecord, stream, h.Seq)
		}
		hb, err := sub(b, bucketHeld, true)
		if err != nil {
			return err
		}
		if err := hb.Put(itob(h.Seq), v); err != nil {
			return err
		}
		if h.State != pipeline.HoldInDoubt {
			return nil
		}
		kb, err := sub(b, bucketHeldKey, true)
		if err != nil {
			return err
		}
		return kb.Put([]byte(h.Key), itob(h.Seq))
	}, nil)
}

// Holds lists the holds of stream, by sequence.
func (s *Store) Holds(stream string) ([]pipeline.Hold, error) {
	var out []pipeline.Hold
	err := s.db.View(func(tx *bolt.Tx) error {
		b, err := streamBucket(tx, stream, false)
		if errors.Is(err, ErrUnknownStream) {
			return nil
		} else if err != nil {
			return err
		}
		hb := b.Bucket(bucketHeld)
		if hb == nil {
			return nil
		}
		return hb.ForEach(func(k, v []byte) error {
			var h pipeline.Hold
			if err := json.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("%w: stream %s hold %d: %w", ErrCorrupt, stream, binary.BigEndian.Uint64(k), err)
			}
			out = append(out, h)
			return nil
		})
	})
	return out, err
}

// Marks returns the marks of stream's queued records by sequence.
func (s *Store) Marks(stream string) (map[uint64][]byte, error) {
	out := map[uint64][]byte{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b, err := streamBucket(tx, stream, false)
		if errors.Is(err, ErrUnknownStream) {
			return nil
		} else if err != nil {
			return err
		}
		mb := b.Bucket(bucketMarks)
		if mb == nil {
			return nil
		}
		return mb.ForEach(func(k, v []byte) error {
			out[binary.BigEndian.Uint64(k)] = bytes.Clone(v)
			return nil
		})
	})
	return out, err
}

// unparkBehind removes the holds of records parked behind holder, whose
// hold is gone: they stay where they are (dead letters can then be
// replayed).
func unparkBehind(b *bolt.Bucket, holder uint64) error {
	hb := b.Bucket(bucketHeld)
	if hb == nil {
		return nil
	}
	var drop [][]byte
	err := hb.ForEach(func(k, v []byte) error {
		var h pipeline.Hold
		if json.Unmarshal(v, &h) == nil && h.State == pipeline.HoldParked && h.Behind == holder {
			drop = append(drop, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range drop {
		if err := hb.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// ReleaseResult tells what Release did.
type ReleaseResult struct {
	// Holders lists the in-doubt records settled (their original seqs).
	Holders []uint64
	// Requeued counts the records put back at the end of the stream, in
	// their original order: released holders, the records parked behind
	// them, and the key's later records that were still queued.
	Requeued int
	// Dropped counts holders turned into dead letters (Drop).
	Dropped int
}

// Release settles in-doubt records of stream, in one transaction. seqs
// names holders by their original sequence (nil: every holder of the
// stream). With drop false each holder is sent again: it, the records
// parked behind it and its key's later records still queued go back to
// the end of the stream in their original order. With drop true F&O is
// known to have the holder: it becomes (or stays) a dead letter with
// dropReason, and the others go back as for a release. Holds and marks of
// all these records are removed in the same transaction, so a crash
// leaves either the holds or the requeued records, never both or neither.
// The gateway must not be delivering the stream meanwhile (the CLI opens
// the file of a stopped gateway).
func (s *Store) Release(ctx context.Context, stream string, seqs []uint64, drop bool, dropReason string) (ReleaseResult, error) {
	var res ReleaseResult
	err := s.submit(ctx, 1, func(tx *bolt.Tx, d *deltas) error {
		res = ReleaseResult{}
		b, err := streamBucket(tx, stream, false)
		if err != nil {
			return err
		}
		hb := b.Bucket(bucketHeld)
		holds := map[uint64]pipeline.Hold{}
		if hb != nil {
			if err := hb.ForEach(func(k, v []byte) error {
				var h pipeline.Hold
				if err := json.Unmarshal(v, &h); err != nil {
					return fmt.Errorf("%w: hold %d: %w", ErrCorrupt, binary.BigEndian.Uint64(k), err)
				}
				holds[binary.BigEndian.Uint64(k)] = h
				return nil
			}); err != nil {
				return err
			}
		}
		var holders []uint64
		for q, h := range holds {
			if h.State == pipeline.HoldInDoubt {
				holders = append(holders, q)
			}
		}
		sort.Slice(holders, func(i, j int) bool { return holders[i] < holders[j] })
		if seqs != nil {
			for _, q := range seqs {
				h, ok := holds[q]
				switch {
				case !ok && len(holders) == 0:
					return fmt.Errorf("%w: stream %s holds no records in doubt", ErrUnknownHold, stream)
				case !ok:
					return fmt.Errorf("%w: stream %s holds no record with seq %d (held: %s; see plantgate queue in-doubt)", ErrUnknownHold, stream, q, joinSeqs(holders))
				case h.State != pipeline.HoldInDoubt:
					return fmt.Errorf("%w: seq %d of %s is parked behind held record %d; release or drop %d", ErrUnknownHold, q, stream, h.Behind, h.Behind)
				}
			}
			holders = append([]uint64(nil), seqs...)
			sort.Slice(holders, func(i, j int) bool { return holders[i] < holders[j] })
		}
		if len(holders) == 0 {
			return nil
		}
		items, deadB := b.Bucket(bucketItems), b.Bucket(bucketDead)
		// Where each record is now: dead letters by original seq.
		deadOf := map[uint64][]byte{}
		c := deadB.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			env, err := decodeEnvelope(v)
			if err == nil && env.OrigSeq != 0 {
				deadOf[env.OrigSeq] = bytes.Clone(k)
			}
		}
		requeue := map[uint64]bool{}
		for _, hq := range holders {
			h := holds[hq]
			res.Holders = append(res.Holders, hq)
			if drop {
				if _, dead := deadOf[hq]; !dead && items.Get(itob(hq)) != nil {
					d.key(s, stream, h.Key, -1)
				}
				if err := s.dropHolder(b, hq, deadOf, dropReason, d.of(stream)); err != nil {
					return err
				}
				res.Dropped++
			} else {
				requeue[hq] = true
			}
			for q, p := range holds {
				if p.State == pipeline.HoldParked && p.Behind == hq {
					requeue[q] = true
				}
			}
			// The key's later records still queued would overtake the
			// requeued ones: they go behind them, in order.
			cur := items.Cursor()
			for k, v := cur.Seek(itob(hq + 1)); k != nil; k, v = cur.Next() {
				env, err := decodeEnvelope(v)
				if err == nil && env.Key == h.Key {
					requeue[binary.BigEndian.Uint64(k)] = true
				}
			}
		}
		order := make([]uint64, 0, len(requeue))
		for q := range requeue {
			order = append(order, q)
		}
		sort.Slice(order, func(i, j int) bool { return order[i] < order[j] })
		for _, q := range order {
			_, fromDead := deadOf[q]
			key, moved, err := requeueRecord(b, q, deadOf, d.of(stream))
			if err != nil {
				return err
			}
			if moved {
				res.Requeued++
				if fromDead {
					d.key(s, stream, key, 1)
				}
			}
		}
		for _, hq := range holders {
			if err := deleteHold(b, hq); err != nil {
				return err
			}
			if err := forgetRecord(b, hq, false); err != nil {
				return err
			}
		}
		for _, q := range order {
			if err := deleteHold(b, q); err != nil {
				return err
			}
		}
		return nil
	}, func(*deltas) {
		// Requeued items left the leases' view; nothing is leased while the
		// gateway is stopped, but forget any lease all the same.
		if st := s.streams[stream]; st != nil {
			st.leases = map[uint64]time.Time{}
			st.expiring, st.scanFrom = 0, 0
		}
	})
	return res, err
}

// dropHolder makes the held record q a dead letter with reason.
func (s *Store) dropHolder(b *bolt.Bucket, q uint64, deadOf map[uint64][]byte, reason string, c *counters) error {
	now := s.o.Now().UnixNano()
	deadB, items := b.Bucket(bucketDead), b.Bucket(bucketItems)
	if dk, ok := deadOf[q]; ok {
		v := deadB.Get(dk)
		env, err := decodeEnvelope(v)
		if err != nil {
			return err
		}
		env.Reason, env.DeadAt = reason, now
		nv, err := encodeEnvelope(env)
		if err != nil {
			return err
		}
		c.deadBytes += int64(len(nv) - len(v))
		return deadB.Put(dk, nv)
	}
	v := items.Get(itob(q))
	if v == nil {
		return nil // gone already
	}
	env, err := decodeEnvelope(v)
	if err != nil {
		return err
	}
	env.Reason, env.DeadAt, env.OrigSeq = reason, now, q
	nv, err := encodeEnvelope(env)
	if err != nil {
		return err
	}
	ds, err := deadB.NextSequence()
	if err != nil {
		return err
	}
	if err := deadB.Put(itob(ds), nv); err != nil {
		return err
	}
	if err := items.Delete(itob(q)); err != nil {
		return err
	}
	c.count--
	c.bytes -= int64(len(v))
	c.dead++
	c.deadBytes += int64(len(nv))
	return nil
}

// requeueRecord moves record q (a dead letter, or still queued) to the end
// of the stream. moved is false when it is in neither place.
func requeueRecord(b *bolt.Bucket, q uint64, deadOf map[uint64][]byte, c *counters) (string, bool, error) {
	deadB, items := b.Bucket(bucketDead), b.Bucket(bucketItems)
	var env *envelope
	var err error
	if dk, ok := deadOf[q]; ok {
		v := deadB.Get(dk)
		if env, err = decodeEnvelope(v); err != nil {
			return "", false, err
		}
		if err := deadB.Delete(dk); err != nil {
			return "", false, err
		}
		c.dead--
		c.deadBytes -= int64(len(v))
	} else if v := items.Get(itob(q)); v != nil {
		if env, err = decodeEnvelope(v); err != nil {
			return "", false, err
		}
		if err := items.Delete(itob(q)); err != nil {
			return "", false, err
		}
		c.count--
		c.bytes -= int64(len(v))
	} else {
		return "", false, nil
	}
	if err := forgetRecord(b, q, false); err != nil {
		return "", false, err
	}
	env.Reason, env.DeadAt, env.OrigSeq, env.Attempts = "", 0, 0, 0
	nv, err := encodeEnvelope(env)
	if err != nil {
		return "", false, err
	}
	seq, err := items.NextSequence()
	if err != nil {
		return "", false, err
	}
	if err := items.Put(itob(seq), nv); err != nil {
		return "", false, err
	}
	c.count++
	c.bytes += int64(len(nv))
	return env.Key, true, nil
}

func joinSeqs(q []uint64) string {
	parts := make([]string, len(q))
	for i, v := range q {
		parts[i] = fmt.Sprint(v)
	}
	return strings.Join(parts, ", ")
}

// MarkWrite is a mark to import.
type MarkWrite struct {
	Stream string
	Seq    uint64
	Value  []byte
}

// HoldWrite is a hold to import.
type HoldWrite struct {
	Stream string
	Hold   pipeline.Hold
}

// Import writes marks and holds as an older plantgate kept them elsewhere,
// and states (the old entries' deletion), in one transaction. A mark of a
// record no longer queued is dropped; a hold is kept whether its record is
// queued or a dead letter (where a held record normally is).
func (s *Store) Import(ctx context.Context, marks []MarkWrite, holds []HoldWrite, states ...StateWrite) error {
	if err := checkStates(states); err != nil {
		return err
	}
	enc := make([][]byte, len(holds))
	for i, h := range holds {
		v, err := json.Marshal(h.Hold)
		if err != nil {
			return fmt.Errorf("encode hold: %w", err)
		}
		enc[i] = v
	}
	return s.submit(ctx, len(marks)+len(holds)+len(states), func(tx *bolt.Tx, _ *deltas) error {
		for _, m := range marks {
			b, err := streamBucket(tx, m.Stream, false)
			if err != nil || b.Bucket(bucketItems).Get(itob(m.Seq)) == nil {
				continue
			}
			mb, err := sub(b, bucketMarks, true)
			if err != nil {
				return err
			}
			if err := mb.Put(itob(m.Seq), bytes.Clone(m.Value)); err != nil {
				return err
			}
		}
		for i, h := range holds {
			b, err := streamBucket(tx, h.Stream, false)
			if err != nil || len(h.Hold.Key) > MaxKeyBytes {
				continue
			}
			hb, err := sub(b, bucketHeld, true)
			if err != nil {
				return err
			}
			if err := hb.Put(itob(h.Hold.Seq), enc[i]); err != nil {
				return err
			}
			if h.Hold.State == pipeline.HoldInDoubt {
				kb, err := sub(b, bucketHeldKey, true)
				if err != nil {
					return err
				}
				if err := kb.Put([]byte(h.Hold.Key), itob(h.Hold.Seq)); err != nil {
					return err
				}
			}
		}
		return applyStates(tx, states)
	}, nil)
}
