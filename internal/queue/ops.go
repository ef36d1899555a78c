package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"strings"
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
	// Seqs holds each entry's sequence in its stream, or 0 for an entry
	// not queued (a duplicate or a conflict).
	Seqs []uint64
	// Duplicates counts entries skipped because their ID was seen within
	// the dedup window with the same content.
	Duplicates int
	// Conflicts lists the entries whose ID was seen within the dedup window
	// with different content: they were dead-lettered in their stream with
	// both versions, not queued.
	Conflicts []Conflict
}

// Conflict is an entry whose ID was already queued with other content.
type Conflict struct {
	// Index is the entry's position in Append's entries.
	Index int
	// FirstSeq is the sequence of the first version in its stream.
	FirstSeq uint64
	// DeadSeq is the dead letter that holds the new version.
	DeadSeq uint64
}

// Limits on what can be stored: bbolt keys are at most 32 KiB, and ids and
// keys become bbolt keys (the dedup index, the held-key index).
const (
	// MaxIDBytes is the longest record ID.
	MaxIDBytes = 1024
	// MaxKeyBytes is the longest order key.
	MaxKeyBytes = 1024
)

// maxKeptFirstVersion bounds the first version kept beside an idempotency
// key (a MES message fits), so a conflict can show both versions while the
// keys of a day of messages stay small against the quota.
const maxKeptFirstVersion = 512

// ValidateEntry reports why an entry can never be stored (a name, ID,
// key or size over the limits), or nil. Append fails whole for such an
// entry; callers that must not lose the others check each entry first and
// dead-letter the ones that fail, with this reason.
func (s *Store) ValidateEntry(e Entry) error {
	if err := validateNames(&e); err != nil {
		return err
	}
	b, err := encodeEnvelope(envelopeOf(&e.Record, s.o.Now()))
	if err != nil {
		return err
	}
	if len(b) > s.o.MaxRecordBytes {
		return fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(b), s.o.MaxRecordBytes)
	}
	return nil
}

// validateNames checks what of an entry becomes a bbolt key.
func validateNames(e *Entry) error {
	if !validName(e.Stream) {
		return fmt.Errorf("%w: stream %q", ErrBadName, e.Stream)
	}
	if len(e.Record.ID) > MaxIDBytes {
		return fmt.Errorf("%w: record id of %d bytes (at most %d)", ErrTooLarge, len(e.Record.ID), MaxIDBytes)
	}
	if len(e.Record.Key) > MaxKeyBytes {
		return fmt.Errorf("%w: record key of %d bytes (at most %d)", ErrTooLarge, len(e.Record.Key), MaxKeyBytes)
	}
	return nil
}

// contentHash identifies a record's content for the dedup check: the
// source message's raw bytes when the record has them (a redelivery
// carries the same bytes, while mapped fields may hold the time it was
// received), else its key and mapped fields (json.Marshal sorts map keys,
// so equal content hashes equal). first is what is kept of it: 'r' and
// the raw bytes, or 'f' and the fields' JSON.
func contentHash(r *pipeline.Record) (uint64, []byte) {
	h := fnv.New64a()
	if len(r.Raw) > 0 {
		_, _ = h.Write(r.Raw)
		return h.Sum64(), append([]byte{'r'}, r.Raw...)
	}
	_, _ = h.Write([]byte(r.Key))
	_, _ = h.Write([]byte{0})
	fb, err := json.Marshal(r.Fields)
	if err != nil {
		fb = []byte(fmt.Sprint(r.Fields))
	}
	_, _ = h.Write(fb)
	return h.Sum64(), append([]byte{'f'}, fb...)
}

// idValue is the stored value of an idempotency key.
//
//	expiry(be64) hash(be64) seq(be64) first-version fields (JSON, bounded)
//
// Version 1 files hold only the expiry.
type idValue struct {
	expiry, hash, seq uint64
	first             []byte
	hasHash           bool
}

func (v idValue) encode() []byte {
	b := make([]byte, 24, 24+len(v.first))
	binary.BigEndian.PutUint64(b[0:], v.expiry)
	binary.BigEndian.PutUint64(b[8:], v.hash)
	binary.BigEndian.PutUint64(b[16:], v.seq)
	return append(b, v.first...)
}

func decodeIDValue(b []byte) (idValue, bool) {
	switch {
	case len(b) == 8:
		return idValue{expiry: binary.BigEndian.Uint64(b)}, true
	case len(b) >= 24:
		return idValue{expiry: binary.BigEndian.Uint64(b), hash: binary.BigEndian.Uint64(b[8:]), seq: binary.BigEndian.Uint64(b[16:]),
			first: b[24:], hasHash: true}, true
	}
	return idValue{}, false
}

// Append stores entries (and states) in one transaction and returns after
// the fsync'd commit. An entry whose ID was appended to the same stream
// within the dedup window is skipped: counted as a duplicate when its
// content (key and fields) is the same, and dead-lettered in its stream
// with both versions as a conflict when it differs. When a quota is
// reached Append blocks (OnFull Block) until space frees or ctx ends, or
// fails with ErrFull (OnFull Reject). An entry that fails ValidateEntry
// fails the whole Append and nothing is written.
func (s *Store) Append(ctx context.Context, entries []Entry, states ...StateWrite) (AppendResult, error) {
	if err := checkStates(states); err != nil {
		return AppendResult{}, err
	}
	now := s.o.Now()
	enc := make([][]byte, len(entries))
	hashes := make([]uint64, len(entries))
	firsts := make([][]byte, len(entries))
	perStream := map[string]int64{}
	var size int64
	for i := range entries {
		e := &entries[i]
		if err := validateNames(e); err != nil {
			return AppendResult{}, err
		}
		b, err := encodeEnvelope(envelopeOf(&e.Record, now))
		if err != nil {
			return AppendResult{}, err
		}
		if len(b) > s.o.MaxRecordBytes {
			return AppendResult{}, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(b), s.o.MaxRecordBytes)
		}
		enc[i] = b
		if e.Record.ID != "" {
			hashes[i], firsts[i] = contentHash(&e.Record)
			if len(firsts[i]) > maxKeptFirstVersion {
				firsts[i] = nil
			}
		}
		n := int64(len(b)) + overheadPerRecord
		perStream[e.Stream] += n
		size += n
	}
	if err := s.reserve(ctx, perStream, size); err != nil {
		return AppendResult{}, err
	}
	res := AppendResult{Seqs: make([]uint64, len(entries))}
	expiry := uint64(now.Add(s.o.DedupWindow).UnixNano())
	nowNano := uint64(now.UnixNano())
	err := s.submit(ctx, len(entries)+len(states), func(tx *bolt.Tx, d *deltas) error {
		res.Duplicates, res.Conflicts = 0, nil
		for i := range entries {
			e := &entries[i]
			b, err := streamBucket(tx, e.Stream, true)
			if err != nil {
				return err
			}
			items := b.Bucket(bucketItems)
			if id := e.Record.ID; id != "" {
				ids := b.Bucket(bucketIDs)
				if old, ok := decodeIDValue(ids.Get([]byte(id))); ok && old.expiry > nowNano {
					res.Seqs[i] = 0
					if !old.hasHash || old.hash == hashes[i] {
						res.Duplicates++
						continue
					}
					ds, n, err := s.putConflict(b, &e.Record, old, now)
					if err != nil {
						return err
					}
					res.Conflicts = append(res.Conflicts, Conflict{Index: i, FirstSeq: old.seq, DeadSeq: ds})
					c := d.of(e.Stream)
					c.dead++
					c.deadBytes += n
					continue
				}
				seq := items.Sequence() + 1
				if err := ids.Put([]byte(id), idValue{expiry: expiry, hash: hashes[i], seq: seq, first: firsts[i]}.encode()); err != nil {
					return err
				}
				if err := b.Bucket(bucketIdx).Put(append(itob(expiry), id...), nil); err != nil {
					return err
				}
			}
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
			d.key(s, e.Stream, e.Record.Key, 1)
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

// putConflict dead-letters r, whose ID was queued before with other
// content, beside the first version (still queued, or as kept with the
// ID). It returns the dead letter's sequence and size.
func (s *Store) putConflict(b *bolt.Bucket, r *pipeline.Record, old idValue, now time.Time) (uint64, int64, error) {
	env := envelopeOf(r, now)
	env.Meta = maps.Clone(env.Meta)
	if env.Meta == nil {
		env.Meta = map[string]any{}
	}
	first := map[string]any{"seq": old.seq}
	if v := b.Bucket(bucketItems).Get(itob(old.seq)); v != nil {
		if fe, err := decodeEnvelope(v); err == nil {
			first["fields"], first["key"], first["state"] = fe.Fields, fe.Key, "queued"
			if len(fe.Raw) > 0 {
				first["raw"] = string(fe.Raw)
			}
		}
	} else if len(old.first) > 1 {
		switch old.first[0] {
		case 'r':
			first["raw"] = string(old.first[1:])
		case 'f':
			var f map[string]any
			if json.Unmarshal(old.first[1:], &f) == nil {
				first["fields"] = f
			}
		}
		first["state"] = "delivered or dead-lettered"
	} else {
		first["state"] = "delivered or dead-lettered (its fields were too large to keep)"
	}
	env.Meta["conflict_first_version"] = first
	env.Reason = fmt.Sprintf("conflict: id %q was queued before (seq %d) with different content; this second version was not queued. "+
		"Both versions are kept here: the record is the second, meta.conflict_first_version the first. Replay it if the second version must go to F&O too", r.ID, old.seq)
	env.DeadAt = now.UnixNano()
	nv, err := encodeEnvelope(env)
	if err != nil {
		return 0, 0, err
	}
	deadB := b.Bucket(bucketDead)
	ds, err := deadB.NextSequence()
	if err != nil {
		return 0, 0, err
	}
	return ds, int64(len(nv)), deadB.Put(itob(ds), nv)
}

// overheadPerRecord is what bbolt spends around each stored value (leaf
// element header, key, page slack), counted when admitting an append.
const overheadPerRecord = 64

// reserve admits size bytes against the quotas, blocking or rejecting.
// Dead letters count against the file's quota, and once DeadMaxBytes is
// reached appends wait as for a full queue.
func (s *Store) reserve(ctx context.Context, perStream map[string]int64, size int64) error {
	if s.o.MaxBytes > 0 && size > s.o.MaxBytes {
		return fmt.Errorf("%w: %d bytes exceed the queue quota %d", ErrTooLarge, size, s.o.MaxBytes)
	}
	s.mu.Lock()
	for {
		if s.isClosed.Load() {
			s.mu.Unlock()
			return ErrClosed
		}
		if s.fullLocked(perStream, size) == "" {
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

// fullLocked says why size more bytes do not fit now ("" when they do).
// Call with mu held.
func (s *Store) fullLocked(perStream map[string]int64, size int64) string {
	if s.o.MaxBytes > 0 && s.used+s.reserved+size > s.o.MaxBytes {
		return fmt.Sprintf("the queue file uses %d of its %d bytes (max_bytes)", s.used+s.reserved, s.o.MaxBytes)
	}
	if s.o.DeadMaxBytes > 0 && s.deadTotal >= s.o.DeadMaxBytes {
		return fmt.Sprintf("dead letters use %d of their %d bytes (dead_max_bytes): replay or purge them", s.deadTotal, s.o.DeadMaxBytes)
	}
	if s.o.StreamMaxBytes > 0 {
		for name, n := range perStream {
			st := s.stream(name)
			if st.bytes+st.reserved+n > s.o.StreamMaxBytes && st.bytes+st.reserved > 0 {
				return fmt.Sprintf("stream %s holds %d of its %d bytes (stream_max_bytes)", name, st.bytes+st.reserved, s.o.StreamMaxBytes)
			}
		}
	}
	return ""
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
			if err := forgetRecord(b, q, true); err != nil {
				return err
			}
			if s.tracked(stream) {
				if env, err := decodeEnvelope(v); err == nil {
					d.key(s, stream, env.Key, -1)
				}
			}
			c := d.of(stream)
			c.count--
			c.bytes -= n
		}
		return applyStates(tx, states)
	}, func(*deltas) { s.dropLeases(stream, seqs) })
}

// forgetRecord deletes what the queue keeps beside a record that leaves
// its stream: its mark, and with holds also its hold (and its key's
// in-doubt entry when the record held the key).
func forgetRecord(b *bolt.Bucket, seq uint64, holds bool) error {
	k := itob(seq)
	if mb := b.Bucket(bucketMarks); mb != nil {
		if err := mb.Delete(k); err != nil {
			return err
		}
	}
	if !holds {
		return nil
	}
	return deleteHold(b, seq)
}

// deleteHold removes the hold of seq and, if it held its key, the key's
// entry.
func deleteHold(b *bolt.Bucket, seq uint64) error {
	hb := b.Bucket(bucketHeld)
	if hb == nil {
		return nil
	}
	k := itob(seq)
	v := hb.Get(k)
	if v == nil {
		return nil
	}
	var h pipeline.Hold
	if json.Unmarshal(v, &h) == nil && h.State == pipeline.HoldInDoubt {
		if kb := b.Bucket(bucketHeldKey); kb != nil && bytes.Equal(kb.Get([]byte(h.Key)), k) {
			if err := kb.Delete([]byte(h.Key)); err != nil {
				return err
			}
		}
	}
	return hb.Delete(k)
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
			// The mark goes with the record; a hold stays beside the dead
			// letter until an operator releases or drops it.
			if err := forgetRecord(b, dl.Seq, false); err != nil {
				return err
			}
			d.key(s, stream, env.Key, -1)
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
// A record with an ID already dead-lettered in stream within the dedup
// window is skipped, so an upstream redelivery of a message that fails
// again does not make a second dead letter; it returns how many were
// skipped. AddDead waits for space (or fails with ErrFull) like Append.
func (s *Store) AddDead(ctx context.Context, stream string, recs []pipeline.Record, reasons []string) (int, error) {
	if !validName(stream) {
		return 0, fmt.Errorf("%w: stream %q", ErrBadName, stream)
	}
	if len(reasons) != len(recs) {
		return 0, fmt.Errorf("add dead letters: %d records and %d reasons", len(recs), len(reasons))
	}
	now := s.o.Now()
	enc := make([][]byte, len(recs))
	var size int64
	for i, why := range reasons {
		r := recs[i]
		if len(r.ID) > MaxIDBytes {
			r.ID = ""
		}
		env := envelopeOf(&r, now)
		env.Reason, env.DeadAt = why, now.UnixNano()
		b, err := encodeEnvelope(env)
		if err != nil {
			return 0, err
		}
		if len(b) > s.o.MaxRecordBytes && len(env.Raw) > 0 {
			// Keep what fits of a message too large to store whole, and say so.
			keep := max(s.o.MaxRecordBytes-(len(b)-len(env.Raw))-256, 0)
			env.Reason += fmt.Sprintf(" (raw message of %d bytes cut to its first %d to fit max_record_bytes)", len(env.Raw), keep)
			env.Raw = env.Raw[:keep]
			if b, err = encodeEnvelope(env); err != nil {
				return 0, err
			}
		}
		enc[i] = b
		size += int64(len(b)) + overheadPerRecord
	}
	if err := s.reserve(ctx, map[string]int64{}, size); err != nil {
		return 0, err
	}
	expiry := uint64(now.Add(s.o.DedupWindow).UnixNano())
	nowNano := uint64(now.UnixNano())
	skipped := 0
	err := s.submit(ctx, len(recs), func(tx *bolt.Tx, d *deltas) error {
		skipped = 0
		b, err := streamBucket(tx, stream, true)
		if err != nil {
			return err
		}
		deadB, ids := b.Bucket(bucketDead), b.Bucket(bucketIDs)
		for i, v := range enc {
			if id := recs[i].ID; id != "" && len(id) <= MaxIDBytes {
				if old, ok := decodeIDValue(ids.Get([]byte(id))); ok && old.expiry > nowNano {
					skipped++
					continue
				}
				if err := ids.Put([]byte(id), idValue{expiry: expiry}.encode()); err != nil {
					return err
				}
				if err := b.Bucket(bucketIdx).Put(append(itob(expiry), id...), nil); err != nil {
					return err
				}
			}
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
	}, func(*deltas) { s.reserved -= size })
	return skipped, err
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
// many were moved. A dead letter of a record a sink holds in doubt (or
// parked behind one) is not replayed: with explicit seqs Replay fails with
// ErrHeld and moves nothing; with nil it skips them (Release and Drop
// settle them).
func (s *Store) Replay(ctx context.Context, stream string, seqs []uint64) (int, error) {
	moved := 0
	err := s.submit(ctx, 1, func(tx *bolt.Tx, d *deltas) error {
		moved = 0
		b, err := streamBucket(tx, stream, false)
		if err != nil {
			return err
		}
		items, deadB := b.Bucket(bucketItems), b.Bucket(bucketDead)
		held := b.Bucket(bucketHeld)
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
			if held != nil && env.OrigSeq != 0 && held.Get(itob(env.OrigSeq)) != nil {
				if seqs == nil {
					continue
				}
				return fmt.Errorf("%w: dead letter %d of %s (record seq %d) is in doubt; use plantgate queue release or drop --stream %s --seq %d",
					ErrHeld, binary.BigEndian.Uint64(k), stream, env.OrigSeq, stream, env.OrigSeq)
			}
			// A replayed record is mapped again by its flow's current
			// config when it carries its source message.
			env.Reason, env.DeadAt, env.OrigSeq, env.Attempts = "", 0, 0, 0
			env.Remap = len(env.Raw) > 0 && !strings.HasPrefix(stream, "_")
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
			d.key(s, stream, env.Key, 1)
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
// sequences. Marks and holds of purged records go in the same
// transaction; a purged holder's parked records stay dead letters, no
// longer held, so they can be replayed. A stream created again after
// PurgeStream continues after its last sequences.
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
				orig := binary.BigEndian.Uint64(k)
				if isDead {
					orig = 0
					if env, err := decodeEnvelope(v); err == nil {
						orig = env.OrigSeq
					}
				}
				if !isDead && s.tracked(stream) {
					if env, err := decodeEnvelope(v); err == nil {
						d.key(s, stream, env.Key, -1)
					}
				}
				if err := bk.Delete(k); err != nil {
					return err
				}
				if orig != 0 {
					if err := forgetRecord(b, orig, true); err != nil {
						return err
					}
					if err := unparkBehind(b, orig); err != nil {
						return err
					}
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
			meta := tx.Bucket(bucketMeta)
			if err := meta.Put([]byte(prefixSeqFloor+stream), itob(b.Bucket(bucketItems).Sequence())); err != nil {
				return err
			}
			if err := meta.Put([]byte(prefixDSeqFloor+stream), itob(b.Bucket(bucketDead).Sequence())); err != nil {
				return err
			}
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
				// The value starts with its expiry (8 bytes in a version 1
				// file, then content hash, sequence and first version); an
				// id seen again since has a later one and stays.
				if v := ids.Get(id); len(v) >= 8 && bytes.Equal(v[:8], k[:8]) {
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

// expireDead removes dead letters older than DeadRetention, a bounded
// number per run, logging how many of each stream went.
func (s *Store) expireDead() {
	if s.o.DeadRetention <= 0 {
		return
	}
	cut := s.o.Now().Add(-s.o.DeadRetention).UnixNano()
	gone := map[string]counters{}
	err := s.db.Update(func(tx *bolt.Tx) error {
		clear(gone)
		root := tx.Bucket(bucketStreams)
		budget := 10000
		return root.ForEachBucket(func(name []byte) error {
			b := root.Bucket(name)
			deadB := b.Bucket(bucketDead)
			var drop [][]byte
			var c counters
			cur := deadB.Cursor()
			for k, v := cur.First(); k != nil && budget > 0; k, v = cur.Next() {
				env, err := decodeEnvelope(v)
				if err != nil {
					continue
				}
				if env.DeadAt >= cut {
					// Dead letters are numbered as they die: the rest are newer.
					break
				}
				if hb := b.Bucket(bucketHeld); hb != nil && env.OrigSeq != 0 && hb.Get(itob(env.OrigSeq)) != nil {
					continue // in doubt: an operator decides, never the clock
				}
				drop = append(drop, bytes.Clone(k))
				c.dead--
				c.deadBytes -= int64(len(v))
				budget--
			}
			if len(drop) == 0 {
				return nil
			}
			for _, k := range drop {
				if err := deadB.Delete(k); err != nil {
					return err
				}
			}
			s.mu.Lock()
			st := s.streams[string(name)]
			var cur2 counters
			if st != nil {
				cur2 = counters{st.count, st.bytes, st.dead + c.dead, st.deadBytes + c.deadBytes}
			}
			s.mu.Unlock()
			gone[string(name)] = c
			return b.Put(keyStats, cur2.encode())
		})
	})
	if err != nil {
		s.log.Warn().Err(err).Msg("expire dead letters")
		return
	}
	used := s.measure()
	s.mu.Lock()
	s.used = used
	for name, c := range gone {
		if st := s.streams[name]; st != nil {
			st.dead += c.dead
			st.deadBytes += c.deadBytes
		}
		s.deadTotal += c.deadBytes
		s.expired -= c.dead
	}
	s.signalSpace()
	s.mu.Unlock()
	for name, c := range gone {
		s.log.Warn().Str("stream", name).Int64("dead_letters", -c.dead).Dur("dead_retention", s.o.DeadRetention).
			Msg("dead letters older than dead_retention removed")
	}
}

// PruneIDs runs the dedup-window pruning now (it also runs every minute).
func (s *Store) PruneIDs() { s.pruneIDs() }
