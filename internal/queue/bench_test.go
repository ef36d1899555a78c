package queue

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// payload200 makes a record whose envelope is about 200 bytes, the size the
// raw bbolt baseline writes.
func payload200(i int) pipeline.Record {
	return pipeline.Record{Key: "P000123", Fields: map[string]any{
		"ProductionOrderNumber": "P000123", "ItemNumber": "M0001", "Quantity": i, "Unit": "ea",
		"Resource": "Line3-Press", "Operator": "000123", "Note": "report as finished from MES line 3"}}
}

// BenchmarkAppend measures fsync'd appends per second with 1 and 64
// concurrent appenders, one record per Append, group commit on.
func BenchmarkAppend(b *testing.B) {
	for _, appenders := range []int{1, 64} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			s, _ := openTemp(b, Options{})
			ctx := context.Background()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for g := 0; g < appenders; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := int(next.Add(1))
						if i > b.N {
							return
						}
						if _, err := s.Append(ctx, []Entry{{Stream: "f.s", Record: payload200(i)}}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			rate := float64(b.N) / time.Since(start).Seconds()
			commits := max(s.Commits(), 1)
			perTx := max(int(float64(b.N)/float64(commits)+0.5), 1)
			b.StopTimer()
			// The baseline in the same run: raw bbolt at the records per
			// transaction the group commit reached, 200-byte values, fsync,
			// as many records (a tree of the same depth).
			raw := rawBolt(b, perTx, b.N)
			b.ReportMetric(rate, "appends/s")
			b.ReportMetric(float64(perTx), "records/commit")
			b.ReportMetric(raw, "raw-bbolt-records/s")
			b.ReportMetric(rate/raw, "ratio")
		})
	}
}

// rawBolt writes n 200-byte records in transactions of perTx with fsync
// and returns records per second.
func rawBolt(b *testing.B, perTx, n int) float64 {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	val := make([]byte, 200)
	start := time.Now()
	for i := 0; i < n; i += perTx {
		err := db.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("items"))
			if err != nil {
				return err
			}
			for j := 0; j < perTx && i+j < n; j++ {
				seq, _ := bk.NextSequence()
				k := make([]byte, 8)
				binary.BigEndian.PutUint64(k, seq)
				if err := bk.Put(k, val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkRawBolt100 is the baseline: raw bbolt transactions of 100
// 200-byte records with fsync, no envelope, no queue.
func BenchmarkRawBolt100(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	val := make([]byte, 200)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i += 100 {
		err := db.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("items"))
			if err != nil {
				return err
			}
			for j := 0; j < 100 && i+j < b.N; j++ {
				seq, _ := bk.NextSequence()
				k := make([]byte, 8)
				binary.BigEndian.PutUint64(k, seq)
				if err := bk.Put(k, val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}

// BenchmarkLeaseAck measures the delivery side: lease 100, ack 100.
func BenchmarkLeaseAck(b *testing.B) {
	s, _ := openTemp(b, Options{})
	ctx := context.Background()
	batch := make([]Entry, 1000)
	for i := range batch {
		batch[i] = Entry{Stream: "f.s", Record: payload200(i)}
	}
	for n := 0; n < b.N; n += 1000 {
		if _, err := s.Append(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	done := 0
	for done < b.N {
		recs, err := s.Lease("f.s", 100, -1)
		if err != nil || len(recs) == 0 {
			b.Fatalf("lease: %v (%d)", err, len(recs))
		}
		seqs := make([]uint64, len(recs))
		for i, r := range recs {
			seqs[i] = r.Seq
		}
		if err := s.Ack(ctx, "f.s", seqs); err != nil {
			b.Fatal(err)
		}
		done += len(recs)
	}
	b.ReportMetric(float64(done)/time.Since(start).Seconds(), "records/s")
}
