package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// MergeStreams moves everything the streams from hold into stream to, in
// one transaction, and removes them: queued records, dead letters, the
// marks and holds beside them, and their idempotency keys, so a copy of a
// message an older stream took is still recognised. It is how a file
// written while a sink's flows each had their own stream (plantgate
// before one stream per fo.mes sink) is brought to one stream per sink.
//
// Every record of to and from gets a sequence in to after all of to's
// sequences so far (sequences are never reused), its own where that is
// still free: each stream's records keep their order, and the streams are interleaved by the time
// their records were queued, so the records of one key reach the sink in
// the order they were queued. A held record's hold, the records parked
// behind it and its key's hold move with it under their new sequences.
// Records whose Flow is empty (written before records named their flow)
// get flowOf(stream) of the stream they came from, when flowOf is set.
// Dead letters of from are added after to's, in the order they died.
//
// Call it before any runner leases records of these streams. Streams in
// from that do not exist are skipped; it returns how many records and dead
// letters it moved.
func (s *Store) MergeStreams(ctx context.Context, to string, from []string, flowOf func(stream string) string) (int, error) {
	if !validName(to) {
		return 0, fmt.Errorf("merge streams: invalid stream name %q", to)
	}
	var moved int
	err := s.submit(ctx, 1, func(tx *bolt.Tx, d *deltas) error {
		moved = 0
		var srcs []string
		for _, name := range from {
			if name == to {
				continue
			}
			if b, err := streamBucket(tx, name, false); err == nil && b != nil {
				srcs = append(srcs, name)
			}
		}
		if len(srcs) == 0 {
			return nil
		}
		dst, err := streamBucket(tx, to, true)
		if err != nil {
			return err
		}
		for _, name := range []([]byte){bucketMarks, bucketHeld, bucketHeldKey} {
			if _, err := sub(dst, name, true); err != nil {
				return err
			}
		}
		// The destination's own records are sequenced again too, so the
		// older records of a key from srcs are not delivered after its
		// newer ones already in to.
		all := append([]string{to}, srcs...)
		lists := make([][]position, len(all))
		for i, name := range all {
			b := dst
			if i > 0 {
				b, _ = streamBucket(tx, name, false)
			}
			if lists[i], err = positions(b); err != nil {
				return fmt.Errorf("stream %s: %w", name, err)
			}
		}
		items := dst.Bucket(bucketItems)
		newSeq := make([]map[uint64]uint64, len(all))
		for i := range newSeq {
			newSeq[i] = map[uint64]uint64{}
		}
		type placed struct {
			p      position
			stream int
			seq    uint64
		}
		var order []placed
		heads := make([]int, len(all))
		for {
			pick := -1
			for i := range lists {
				if heads[i] < len(lists[i]) && (pick < 0 || lists[i][heads[i]].appended < lists[pick][heads[pick]].appended) {
					pick = i
				}
			}
			if pick < 0 {
				break
			}
			p := lists[pick][heads[pick]]
			heads[pick]++
			// A record keeps its sequence where that is still free (one
			// stream moved into a new one: the numbers an operator saw
			// before the upgrade stay valid).
			q := max(items.Sequence()+1, p.seq)
			if err := items.SetSequence(q); err != nil {
				return err
			}
			newSeq[pick][p.seq] = q
			order = append(order, placed{p, pick, q})
		}
		// Records: the destination's first leave their old sequences.
		for _, p := range lists[0] {
			if p.item != nil {
				if err := items.Delete(itob(p.seq)); err != nil {
					return err
				}
			}
		}
		dc := d.of(to)
		for _, o := range order {
			if o.p.item == nil {
				continue // a dead letter: moved below
			}
			env := o.p.item
			if env.Flow == "" && flowOf != nil && o.stream > 0 {
				env.Flow = flowOf(all[o.stream])
			}
			nv, err := encodeEnvelope(env)
			if err != nil {
				return err
			}
			if err := items.Put(itob(o.seq), nv); err != nil {
				return err
			}
			if o.stream > 0 {
				dc.count++
				sc := d.of(all[o.stream])
				sc.count--
				sc.bytes -= int64(o.p.size)
				d.key(s, all[o.stream], env.Key, -1)
				d.key(s, to, env.Key, 1)
				moved++
			} else {
				dc.bytes -= int64(o.p.size)
			}
			dc.bytes += int64(len(nv))
		}
		// Dead letters: the destination's keep their place with their
		// original sequence renumbered; the others follow in the order
		// they died.
		deadB := dst.Bucket(bucketDead)
		var moveDead []deadLetterAt
		for i, name := range all {
			b := dst
			if i > 0 {
				b, _ = streamBucket(tx, name, false)
			}
			c := b.Bucket(bucketDead).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				env, err := decodeEnvelope(v)
				if err != nil {
					return fmt.Errorf("stream %s dead letter %d: %w", name, binary.BigEndian.Uint64(k), err)
				}
				moveDead = append(moveDead, deadLetterAt{stream: i, seq: binary.BigEndian.Uint64(k), env: env, size: len(v)})
			}
		}
		sort.SliceStable(moveDead, func(i, j int) bool {
			a, b := moveDead[i], moveDead[j]
			if (a.stream == 0) != (b.stream == 0) {
				return a.stream == 0
			}
			if a.stream == 0 {
				return a.seq < b.seq
			}
			return a.env.DeadAt < b.env.DeadAt
		})
		for _, dl := range moveDead {
			env := dl.env
			if env.OrigSeq != 0 {
				q, ok := newSeq[dl.stream][env.OrigSeq]
				if !ok {
					return fmt.Errorf("%w: stream %s dead letter %d: original seq %d not found", ErrCorrupt, all[dl.stream], dl.seq, env.OrigSeq)
				}
				env.OrigSeq = q
			}
			if env.Flow == "" && flowOf != nil && dl.stream > 0 {
				env.Flow = flowOf(all[dl.stream])
			}
			nv, err := encodeEnvelope(env)
			if err != nil {
				return err
			}
			ds := dl.seq
			if dl.stream > 0 {
				if ds, err = deadB.NextSequence(); err != nil {
					return err
				}
				dc.dead++
				sc := d.of(all[dl.stream])
				sc.dead--
				sc.deadBytes -= int64(dl.size)
				moved++
			} else {
				dc.deadBytes -= int64(dl.size)
			}
			dc.deadBytes += int64(len(nv))
			if err := deadB.Put(itob(ds), nv); err != nil {
				return err
			}
		}
		// Marks, holds and the keys they hold back, under the new sequences.
		marks := map[uint64][]byte{}
		holds := map[uint64][]byte{}
		heldKeys := map[string]uint64{}
		for i, name := range all {
			b := dst
			if i > 0 {
				b, _ = streamBucket(tx, name, false)
			}
			if mb := b.Bucket(bucketMarks); mb != nil {
				if err := mb.ForEach(func(k, v []byte) error {
					if q, ok := newSeq[i][binary.BigEndian.Uint64(k)]; ok {
						marks[q] = bytes.Clone(v)
					}
					return nil
				}); err != nil {
					return err
				}
			}
			if hb := b.Bucket(bucketHeld); hb != nil {
				if err := hb.ForEach(func(k, v []byte) error {
					var h pipeline.Hold
					if err := json.Unmarshal(v, &h); err != nil {
						return fmt.Errorf("%w: stream %s hold %d: %w", ErrCorrupt, name, binary.BigEndian.Uint64(k), err)
					}
					q, ok := newSeq[i][h.Seq]
					if !ok {
						return nil // its record is gone: nothing to hold
					}
					h.Seq = q
					if h.Behind != 0 {
						h.Behind = newSeq[i][h.Behind]
					}
					nv, err := json.Marshal(h)
					if err != nil {
						return err
					}
					holds[q] = nv
					if h.State == pipeline.HoldInDoubt {
						if cur, taken := heldKeys[h.Key]; !taken || q < cur {
							heldKeys[h.Key] = q
						}
					}
					return nil
				}); err != nil {
					return err
				}
			}
		}
		for _, name := range []([]byte){bucketMarks, bucketHeld, bucketHeldKey} {
			if err := dst.DeleteBucket(name); err != nil {
				return err
			}
			if _, err := dst.CreateBucket(name); err != nil {
				return err
			}
		}
		for q, v := range marks {
			if err := dst.Bucket(bucketMarks).Put(itob(q), v); err != nil {
				return err
			}
		}
		for q, v := range holds {
			if err := dst.Bucket(bucketHeld).Put(itob(q), v); err != nil {
				return err
			}
		}
		for k, q := range heldKeys {
			if len(k) > MaxKeyBytes {
				continue
			}
			if err := dst.Bucket(bucketHeldKey).Put([]byte(k), itob(q)); err != nil {
				return err
			}
		}
		// Idempotency keys: the one expiring last wins.
		ids, idx := dst.Bucket(bucketIDs), dst.Bucket(bucketIdx)
		for i, name := range srcs {
			b, _ := streamBucket(tx, name, false)
			type kv struct{ k, v []byte }
			var copyIDs, copyIdx []kv
			if err := b.Bucket(bucketIDs).ForEach(func(k, v []byte) error {
				nv, ok := decodeIDValue(v)
				if !ok {
					return nil
				}
				if old, ok := decodeIDValue(ids.Get(k)); ok && old.expiry >= nv.expiry {
					return nil
				}
				if nv.hasHash {
					nv.seq = newSeq[i+1][nv.seq] // 0 when that version is gone
					v = nv.encode()
				}
				copyIDs = append(copyIDs, kv{bytes.Clone(k), bytes.Clone(v)})
				return nil
			}); err != nil {
				return err
			}
			if err := b.Bucket(bucketIdx).ForEach(func(k, _ []byte) error {
				copyIdx = append(copyIdx, kv{k: bytes.Clone(k)})
				return nil
			}); err != nil {
				return err
			}
			for _, e := range copyIDs {
				if err := ids.Put(e.k, e.v); err != nil {
					return err
				}
			}
			for _, e := range copyIdx {
				if err := idx.Put(e.k, nil); err != nil {
					return err
				}
			}
		}
		// The sources go, their last sequences kept so a stream of that
		// name created again never reuses one.
		meta := tx.Bucket(bucketMeta)
		for _, name := range srcs {
			b, _ := streamBucket(tx, name, false)
			if err := meta.Put([]byte(prefixSeqFloor+name), itob(b.Bucket(bucketItems).Sequence())); err != nil {
				return err
			}
			if err := meta.Put([]byte(prefixDSeqFloor+name), itob(b.Bucket(bucketDead).Sequence())); err != nil {
				return err
			}
			if err := tx.Bucket(bucketStreams).DeleteBucket([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	}, func(*deltas) {
		for _, name := range from {
			if name == to {
				continue
			}
			if st := s.streams[name]; st != nil && st.count == 0 && st.dead == 0 {
				delete(s.streams, name)
			}
		}
		if st := s.streams[to]; st != nil {
			st.leases = map[uint64]time.Time{}
			st.expiring, st.scanFrom = 0, 0
		}
	})
	return moved, err
}

// position is a place in a stream's delivery order: a queued record, or a
// dead letter that was one (it keeps its original sequence, which holds
// and the records parked behind it refer to).
type position struct {
	seq      uint64
	appended int64
	item     *envelope // nil for a dead letter
	size     int
}

type deadLetterAt struct {
	stream int
	seq    uint64
	env    *envelope
	size   int
}

// positions lists the places of stream bucket b by sequence.
func positions(b *bolt.Bucket) ([]position, error) {
	var out []position
	c := b.Bucket(bucketItems).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		env, err := decodeEnvelope(v)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", binary.BigEndian.Uint64(k), err)
		}
		out = append(out, position{seq: binary.BigEndian.Uint64(k), appended: env.Appended, item: env, size: len(v)})
	}
	c = b.Bucket(bucketDead).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		env, err := decodeEnvelope(v)
		if err != nil {
			return nil, fmt.Errorf("dead letter %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if env.OrigSeq != 0 {
			out = append(out, position{seq: env.OrigSeq, appended: env.Appended})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out, nil
}
