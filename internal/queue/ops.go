package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// Entry is one record to append to one stream.
type Entry struct {
	Stream string
	Record pipeline.Record
}

// AppendResult tells what Append did with each entry.
type AppendResult struct {
	// Seqs holds each entry's sequence in its stream, or 0 for a duplicate.
	Seqs []uint64
	// Duplicates counts entries skipped because their ID was seen within
	// the dedup window.
	Duplicates int
}

// Append stores entries (and states) in one transaction and returns after
// the fsync'd commit. Entries with an ID already appended to the same
// stream within the dedup window are skipped and counted as duplicates.
// When a quota is reached Append blocks (OnFull Block) until space frees or
// ctx ends, or fails with ErrFull (OnFull Reject).
func (s *Store) Append(ctx context.Context, entries []Entry, states ...StateWrite) (AppendResult, error) {
	if err := checkStates(states); err != nil {
		return AppendResult{}, err
	}
	now := s.o.Now()
	enc := make([][]byte, len(entries))
	perStream := map[string]int64{}
	var size int64
	for i := range entries {
		e := &entries[i]
		if !validName(e.Stream) {
			return AppendResult{}, fmt.Errorf("%w: stream %q", ErrBadName, e.Stream)
		}
		b, err := encodeEnvelope(envelopeOf(&e.Record, now))
		if err != nil {
			return AppendResult{}, err
		}
		if len(b) > s.o.MaxRecordBytes {
			return AppendResult{}, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(b), s.o.MaxRecordBytes)
		}
		enc[i] = b
		perStream[e.Stream] += int64(len(b))
		size += int64(len(b))
	}
	if err := s.reserve(ctx, perStream, size); err != nil {
		return AppendResult{}, err
	}
	res := AppendResult{Seqs: make([]uint64, len(entries))}
	expiry := itob(uint64(now.Add(s.o.DedupWindow).UnixNano()))
	nowNano := uint64(now.UnixNano())
	err := s.submit(ctx, len(entries)+len(states), func(tx *bolt.Tx, d *deltas) error {
		res.Duplicates = 0
		for i := range entries {
			e := &entries[i]
			b, err := streamBucket(tx, e.Stream, true)
			if err != nil {
				return err
			}
			if id := e.Record.ID; id != "" {
				ids := b.Bucket(bucketIDs)
				if v := ids.Get([]byte(id)); len(v) == 8 && binary.BigEndian.Uint64(v) > nowNano {
					res.Seqs[i] = 0
					res.Duplicates++
					continue
				}
				if err := ids.Put([]byte(id), expiry); err != nil {
					return err
				}
				if err := b.Bucket(bucketIdx).Put(append(bytes.Clone(expiry), id...), nil); err != nil {
					return err
				}
			}
			items := b.Bucket(bucketItems)
			seq, err := items.NextSequence()
			if err != nil {
				return err
			}
			if err := items.Put(itob(seq), enc[i]); err != nil {
				return err
			}
			res.Seqs[i] = seq
			c := d.of(e.Stream)
			c.count++
			c.bytes += int64(len(enc[i]))
		}
		return applyStates(tx, states)
	}, func(*deltas) {
		s.reserved -= size
		for name, n := range perStream {
			s.stream(name).reserved -= n
		}
	})
	if err != nil {
		return AppendResult{}, err
	}
	return res, nil
}

// reserve admits size bytes against the quotas, blocking or rejecting.
func (s *Store) reserve(ctx context.Context, perStream map[string]int64, size int64) error {
	if s.o.MaxBytes > 0 && size > s.o.MaxBytes {
		return fmt.Errorf("%w: %d bytes exceed the queue quota %d", ErrTooLarge, size, s.o.MaxBytes)
	}
	s.mu.Lock()
	for {
		if s.closedLocked() {
			s.mu.Unlock()
			return ErrClosed
		}
		full := s.o.MaxBytes > 0 && s.total+s.reserved+size > s.o.MaxBytes
		if !full && s.o.StreamMaxBytes > 0 {
			for name, n := range perStream {
				st := s.stream(name)
				if st.bytes+st.reserved+n > s.o.StreamMaxBytes && st.bytes+st.reserved > 0 {
					full = true
					break
				}
			}
		}
		if !full {
			break
		}
		if s.o.OnFull == Reject {
			s.mu.Unlock()
			return ErrFull
		}
		ch := s.space
		s.blocked++
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			s.mu.Lock()
			s.blocked--
			s.mu.Unlock()
			return fmt.Errorf("wait for queue space: %w", ctx.Err())
		}
		s.mu.Lock()
		s.blocked--
	}
	s.reserved += size
	for name, n := range perStream {
		s.stream(name).reserved += n
	}
	s.mu.Unlock()
	return nil
}

func (s *Store) closedLocked() bool {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	return s.closed
}

// Lease returns up to max records of stream that are not leased, oldest
// first, and leases them for ttl (0: the store's LeaseTimeout; negative:
// until Ack, Nack, DeadLetter or Close). A lease that expires makes its
// record available to Lease again.
func (s *Store) Lease(stream string, max int, ttl time.Duration) ([]pipeline.Record, error) {
	if ttl == 0 {
		ttl = s.o.LeaseTimeout
	}
	now := s.o.Now()
	var exp time.Time
	if ttl > 0 {
		exp = now.Add(ttl)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[stream]
	if st == nil || st.count == 0 || max <= 0 {
		return nil, nil
	}
	var out []pipeline.Record
	var last uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		b, err := streamBucket(tx, stream, false)
		if err != nil {
			return err
		}
		c := b.Bucket(bucketItems).Cursor()
		start := uint64(0)
		if st.expiring == 0 {
			start = st.scanFrom
		}
		for k, v := c.Seek(itob(start)); k != nil && len(out) < max; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			last = seq
			if e, ok := st.leases[seq]; ok && (e.IsZero() || e.After(now)) {
				continue
			}
			env, err := decodeEnvelope(v)
			if err != nil {
				return fmt.Errorf("stream %s seq %d: %w", stream, seq, err)
			}
			out = append(out, env.record(stream, seq))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, r := range out {
		if old, ok := st.leases[r.Seq]; ok && !old.IsZero() {
			st.expiring-- // an expired lease taken over
		}
		st.leases[r.Seq] = exp
		if !exp.IsZero() {
			st.expiring++
		}
	}
	// Everything examined is now leased: with no expiring leases, the
	// next Lease can start after it.
	if exp.IsZero() && st.expiring == 0 && last >= st.scanFrom {
		st.scanFrom = last + 1
	}
	return out, nil
}

// Renew extends the leases of seqs by ttl (0: LeaseTimeout).
func (s *Store) Renew(stream string, seqs []uint64, ttl time.Duration) {
	if ttl == 0 {
		ttl = s.o.LeaseTimeout
	}
	exp := s.o.Now().Add(ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[stream]; st != nil {
		for _, q := range seqs {
			if _, ok := st.leases[q]; ok {
				st.leases[q] = exp
			}
		}
	}
}

// Nack releases the leases of seqs so the records are offered again.
func (s *Store) Nack(stream string, seqs []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[stream]; st != nil {
		st.release(seqs, true)
	}
}

// Leased returns how many records of stream are leased now.
func (s *Store) Leased(stream string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[stream]; st != nil {
		return len(st.leases)
	}
	return 0
}

// Ack deletes delivered records (and writes states) durably. Unknown or
// already acked seqs are ignored, so an ack may be repeated.
func (s *Store) Ack(ctx context.Context, stream string, seqs []uint64, states ...StateWrite) error {
	if err := checkStates(states); err != nil {
		return err
	}
	return s.submit(ctx, len(seqs)+len(states), func(tx *bolt.Tx, d *deltas) error {
		b, err := streamBucket(tx, stream, false)
		if err != nil {
			return err
		}
		items := b.Bucket(bucketItems)
		for _, q := range seqs {
			k := itob(q)
			v := items.Get(k)
			if v == nil {
				continue
			}
			n := int64(len(v))
			if err := items.Delete(k); err != nil {
				return err
			}
			c := d.of(stream)
			c.count--
			c.bytes -= n
		}
		return applyStates(tx, states)
	}, func(*deltas) { s.dropLeases(stream, seqs) })
}

// dropLeases forgets the leases of records that left the stream.
func (s *Store) dropLeases(stream string, seqs []uint64) {
	if st := s.streams[stream]; st != nil {
		st.release(seqs, false)
	}
}

// Dead names a record to dead-letter and why.
type Dead struct {
	Seq    uint64
	Reason string
	// Attempts is stored with the dead letter.
	Attempts int
}

// DeadLetter moves records from a stream's items to its dead letters with
// their reasons, in one durable transaction.
func (s *Store) DeadLetter(ctx context.Context, stream string, dead []Dead, states ...StateWrite) error {
	if err := checkStates(states); err != nil {
		return err
	}
	now := s.o.Now().UnixNano()
	seqs := make([]uint64, len(dead))
	for i, d := range dead {
		seqs[i] = d.Seq
	}
	return s.submit(ctx, len(dead)+len(states), func(tx *bolt.Tx, d *deltas) error {
		b, err := streamBucket(tx, stream, false)
		if err != nil {
			return err
		}
		items, deadB := b.Bucket(bucketItems), b.Bucket(bucketDead)
		for _, dl := range dead {
			k := itob(dl.Seq)
			v := items.Get(k)
			if v == nil {
				continue
			}
			n := int64(len(v))
			env, err := decodeEnvelope(v)
			if err != nil {
				// Keep the damaged bytes as the raw payload so nothing is lost.
				env = &envelope{Raw: bytes.Clone(v), Time: now, Appended: now}
			}
			env.Reason, env.DeadAt, env.OrigSeq = dl.Reason, now, dl.Seq
			if dl.Attempts > env.Attempts {
				env.Attempts = dl.Attempts
			}
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
			if err := items.Delete(k); err != nil {
				return err
			}
			c := d.of(stream)
			c.count--
			c.bytes -= n
			c.dead++
			c.deadBytes += int64(len(nv))
		}
		return applyStates(tx, states)
	}, func(*deltas) { s.dropLeases(stream, seqs) })
}

// AddDead stores records directly as dead letters of stream (used for
// messages that could not be decoded or mapped, which never became items).
func (s *Store) AddDead(ctx context.Context, stream string, recs []pipeline.Record, reasons []string) error {
	if !validName(stream) {
		return fmt.Errorf("%w: stream %q", ErrBadName, stream)
	}
	now := s.o.Now()
	enc := make([][]byte, len(recs))
	for i := range recs {
		env := envelopeOf(&recs[i], now)
		env.Reason, env.DeadAt = reasons[i], now.UnixNano()
		b, err := encodeEnvelope(env)
		if err != nil {
			return err
		}
		enc[i] = b
	}
	return s.submit(ctx, len(recs), func(tx *bolt.Tx, d *deltas) error {
		b, err := streamBucket(tx, stream, true)
		if err != nil {
			return err
		}
		deadB := b.Bucket(bucketDead)
		for _, v := range enc {
			ds, err := deadB.NextSequence()
			if err != nil {
				return err
			}
			if err := deadB.Put(itob(ds), v); err != nil {
				return err
			}
			c := d.of(stream)
			c.dead++
			c.deadBytes += int64(len(v))
		}
		return nil
	}, nil)
}

// DeadLetterRecord is a dead letter as listed.
type DeadLetterRecord struct {
	// Seq is the dead letter's own sequence (used by Replay and Purge).
	Seq uint64
	// OrigSeq is the record's sequence when it was an item (0 for records
	// dead-lettered before they were queued).
	OrigSeq  uint64
	Reason   string
	DeadAt   time.Time
	Attempts int
	Record   pipeline.Record
}

// List returns up to limit pending records of stream with seq > after.
func (s *Store) List(stream string, after uint64, limit int) ([]pipeline.Record, error) {
	var out []pipeline.Record
	err := s.scan(stream, bucketItems, after, limit, func(seq uint64, env *envelope) {
		out = append(out, env.record(stream, seq))
	})
	return out, err
}

// ListDead returns up to limit dead letters of stream with seq > after.
func (s *Store) ListDead(stream string, after uint64, limit int) ([]DeadLetterRecord, error) {
	var out []DeadLetterRecord
	err := s.scan(stream, bucketDead, after, limit, func(seq uint64, env *envelope) {
		out = append(out, DeadLetterRecord{Seq: seq, OrigSeq: env.OrigSeq, Reason: env.Reason,
			DeadAt: time.Unix(0, env.DeadAt).UTC(), Attempts: env.Attempts, Record: env.record(stream, env.OrigSeq)})
	})
	return out, err
}

func (s *Store) scan(stream string, bucket []byte, after uint64, limit int, fn func(uint64, *envelope)) error {
	if limit <= 0 {
		limit = 1 << 30
	}
	return s.db.View(func(tx *bolt.Tx) error {
		b, err := streamBucket(tx, stream, false)
		if err != nil {
			return err
		}
		c := b.Bucket(bucket).Cursor()
		n := 0
		for k, v := c.Seek(itob(after + 1)); k != nil && n < limit; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			env, err := decodeEnvelope(v)
			if err != nil {
				return fmt.Errorf("stream %s seq %d: %w", stream, seq, err)
			}
			fn(seq, env)
			n++
		}
		return nil
	})
}

// Replay moves dead letters of stream back to its items (at the end of the
// stream), so they are delivered again. seqs nil replays all. It returns how
// many were moved.
func (s *Store) Replay(ctx context.Context, stream string, seqs []uint64) (int, error) {
	moved := 0
	err := s.submit(ctx, 1, func(tx *bolt.Tx, d *deltas) error {
		moved = 0
		b, err := streamBucket(tx, stream, false)
		if err != nil {
			return err
		}
		items, deadB := b.Bucket(bucketItems), b.Bucket(bucketDead)
		var keys [][]byte
		if seqs == nil {
			c := deadB.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				keys = append(keys, bytes.Clone(k))
			}
		} else {
			for _, q := range seqs {
				keys = append(keys, itob(q))
			}
		}
		for _, k := range keys {
			v := deadB.Get(k)
			if v == nil {
				continue
			}
			dn := int64(len(v))
			env, err := decodeEnvelope(v)
			if err != nil {
				return fmt.Errorf("dead letter %d: %w", binary.BigEndian.Uint64(k), err)
			}
			env.Reason, env.DeadAt, env.OrigSeq, env.Attempts = "", 0, 0, 0
			nv, err := encodeEnvelope(env)
			if err != nil {
				return err
			}
			seq, err := items.NextSequence()
			if err != nil {
				return err
			}
			if err := items.Put(itob(seq), nv); err != nil {
				return err
			}
			if err := deadB.Delete(k); err != nil {
				return err
			}
			c := d.of(stream)
			c.count++
			c.bytes += int64(len(nv))
			c.dead--
			c.deadBytes -= dn
			moved++
		}
		return nil
	}, nil)
	return moved, err
}

// PurgeWhat selects what Purge removes.
type PurgeWhat int

// What Purge removes.
const (
	PurgeItems PurgeWhat = 1 << iota
	PurgeDead
	PurgeStream = PurgeItems | PurgeDead // the whole stream, including its dedup keys
)

// Purge removes a stream's pending records, dead letters, or the whole
// stream, and returns how many records were removed. seqs, if not nil,
// limits the purge to those dead-letter (PurgeDead) or item (PurgeItems)
// sequences.
func (s *Store) Purge(ctx context.Context, stream string, what PurgeWhat, seqs []uint64) (int, error) {
	removed := 0
	err := s.submit(ctx, 1, func(tx *bolt.Tx, d *deltas) error {
		removed = 0
		b, err := streamBucket(tx, stream, false)
		if err != nil {
			return err
		}
		c := d.of(stream)
		del := func(bucket []byte, isDead bool) error {
			bk := b.Bucket(bucket)
			var keys [][]byte
			if seqs == nil {
				cur := bk.Cursor()
				for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
					keys = append(keys, bytes.Clone(k))
				}
			} else {
				for _, q := range seqs {
					keys = append(keys, itob(q))
				}
			}
			for _, k := range keys {
				v := bk.Get(k)
				if v == nil {
					continue
				}
				n := int64(len(v))
				if err := bk.Delete(k); err != nil {
					return err
				}
				if isDead {
					c.dead--
					c.deadBytes -= n
				} else {
					c.count--
					c.bytes -= n
				}
				removed++
			}
			return nil
		}
		if what&PurgeItems != 0 {
			if err := del(bucketItems, false); err != nil {
				return err
			}
		}
		if what&PurgeDead != 0 {
			if err := del(bucketDead, true); err != nil {
				return err
			}
		}
		if what == PurgeStream && seqs == nil {
			return tx.Bucket(bucketStreams).DeleteBucket([]byte(stream))
		}
		return nil
	}, func(*deltas) {
		if what == PurgeStream && seqs == nil {
			if st := s.streams[stream]; st != nil && st.count == 0 && st.dead == 0 {
				delete(s.streams, stream)
			}
			return
		}
		if what&PurgeItems != 0 {
			if st := s.streams[stream]; st != nil {
				if seqs == nil {
					st.leases = map[uint64]time.Time{}
					st.expiring, st.scanFrom = 0, 0
				} else {
					s.dropLeases(stream, seqs)
				}
			}
		}
	})
	return removed, err
}

// pruneIDs removes idempotency keys whose window has passed, a bounded
// number per transaction.
func (s *Store) pruneIDs() {
	now := itob(uint64(s.o.Now().UnixNano()))
	err := s.db.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketStreams)
		budget := 20000
		return root.ForEachBucket(func(name []byte) error {
			b := root.Bucket(name)
			idx, ids := b.Bucket(bucketIdx), b.Bucket(bucketIDs)
			var dead [][]byte
			c := idx.Cursor()
			for k, _ := c.First(); k != nil && budget > 0 && bytes.Compare(k[:8], now) < 0; k, _ = c.Next() {
				dead = append(dead, bytes.Clone(k))
				budget--
			}
			for _, k := range dead {
				if err := idx.Delete(k); err != nil {
					return err
				}
				id := k[8:]
				if v := ids.Get(id); v != nil && bytes.Equal(v, k[:8]) {
					if err := ids.Delete(id); err != nil {
						return err
					}
				}
			}
			return nil
		})
	})
	if err != nil {
		s.log.Warn().Err(err).Msg("prune idempotency keys")
	}
}

// PruneIDs runs the dedup-window pruning now (it also runs every minute).
func (s *Store) PruneIDs() { s.pruneIDs() }
