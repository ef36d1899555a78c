package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// SchemaVersion is the on-disk layout version this package writes. Version
// 2 added record marks, holds, never-reused sequences and content hashes
// beside idempotency keys; a version 1 file is migrated forward at Open.
const SchemaVersion = 2

var (
	bucketMeta    = []byte("meta")
	bucketStreams = []byte("streams")
	bucketState   = []byte("state")
	bucketItems   = []byte("items")
	bucketDead    = []byte("dead")
	bucketIDs     = []byte("ids")
	bucketIdx     = []byte("idx")
	bucketMarks   = []byte("marks")
	bucketHeld    = []byte("held")
	bucketHeldKey = []byte("heldkeys")
	keyStats      = []byte("stats")
	keySchema     = []byte("schema_version")
	keyCreated    = []byte("created")
	// meta keys "seq/<stream>" and "dseq/<stream>" keep the last item and
	// dead-letter sequences of a purged stream, so a stream created again
	// never reuses a sequence (marks and holds are keyed by sequence).
	prefixSeqFloor  = "seq/"
	prefixDSeqFloor = "dseq/"
)

// OnFull is what Append does when a quota is reached.
type OnFull int

const (
	// Block makes Append wait until space frees (or its ctx ends), so the
	// source stops acknowledging and the upstream holds the messages.
	Block OnFull = iota
	// Reject makes Append fail at once with ErrFull.
	Reject
)

// Options configure a Store. The zero value is usable: no quotas, block.
type Options struct {
	// MaxBytes is the quota of the queue file: the bytes in use in it
	// (pending records, dead letters, idempotency keys, state, and bbolt's
	// own pages), measured after every commit (0: none).
	MaxBytes int64
	// StreamMaxBytes is the quota of one stream (0: none).
	StreamMaxBytes int64
	// OnFull selects blocking or rejecting when a quota is reached.
	OnFull OnFull
	// MaxRecordBytes rejects larger records with ErrTooLarge (0: 16 MiB).
	MaxRecordBytes int
	// DeadMaxBytes caps the bytes of dead letters over all streams (0:
	// none besides MaxBytes). Once reached, Append and AddDead wait (or
	// fail with ErrFull) as for a full queue, so sources stop
	// acknowledging; a sink's dead-lettering always goes through, because
	// it frees a pending record.
	DeadMaxBytes int64
	// DeadRetention removes dead letters older than this (0: keep them
	// until replayed or purged). Every removal is logged with its count
	// and counted in Stats.DeadExpired; none is silent.
	DeadRetention time.Duration
	// DedupWindow is how long an idempotency key is remembered (0: 24h).
	DedupWindow time.Duration
	// LeaseTimeout is the default lease duration (0: 2m).
	LeaseTimeout time.Duration
	// CommitMaxRecords caps the records of one group commit (0: 1000).
	CommitMaxRecords int
	// CommitMaxDelay is an extra wait for more requests before a commit that
	// is not full. Zero commits whatever arrived while the previous fsync ran.
	CommitMaxDelay time.Duration
	// CompactMinBytes: at Open, a file larger than this whose live data is
	// under a tenth of its size is compacted (0: never).
	CompactMinBytes int64
	// OpenTimeout bounds the wait for the file lock (0: 500ms).
	OpenTimeout time.Duration
	// ReleaseMappedEvery is how often the commit loop drops the file's
	// mapped pages from the resident set (see releaseMapped; 0: every
	// 200ms, negative: never). Ingest at full speed maps some 10 MB of
	// index pages a second; each release costs a read of /proc/self/maps
	// and one madvise.
	ReleaseMappedEvery time.Duration
	// ReadOnly opens the file for inspection only.
	ReadOnly bool
	// NoSync skips every fsync: each commit's, and the one bbolt makes
	// when the file grows (NoGrowSync; with it a control run would still
	// sync all its data whenever the file grew, and a cut soon after lost
	// nothing). Never set it in a gateway: it exists so the power-cut
	// tests can show that they catch a queue that acknowledges before its
	// data is on disk.
	NoSync bool
	// Log receives lifecycle events.
	Log zerolog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.MaxRecordBytes <= 0 {
		o.MaxRecordBytes = 16 << 20
	}
	if o.DedupWindow <= 0 {
		o.DedupWindow = 24 * time.Hour
	}
	if o.LeaseTimeout <= 0 {
		o.LeaseTimeout = 2 * time.Minute
	}
	if o.CommitMaxRecords <= 0 {
		o.CommitMaxRecords = 1000
	}
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = 500 * time.Millisecond
	}
	if o.ReleaseMappedEvery == 0 {
		o.ReleaseMappedEvery = 200 * time.Millisecond
	}
	if o.DeadMaxBytes <= 0 && o.MaxBytes > 0 {
		// Without a dead-letter cap, dead letters share the whole quota.
		o.DeadMaxBytes = o.MaxBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Store is an open queue file. All methods are safe for concurrent use.
type Store struct {
	path string
	db   *bolt.DB
	o    Options
	log  zerolog.Logger

	commits atomic.Int64 // committed group transactions

	lock     *os.File // the lock file, held while the store is open
	pageSize int64

	closeMu sync.RWMutex // held for reading while submitting; Close takes it for writing
	closed  bool
	// isClosed mirrors closed for readers that hold mu (lock order:
	// closeMu, then mu; never the reverse).
	isClosed atomic.Bool
	reqs     chan *request
	done     chan struct{}

	// mu guards everything below. Lock order: closeMu, then mu.
	mu        sync.Mutex
	streams   map[string]*streamState
	total     int64 // pending record bytes over all streams
	deadTotal int64 // dead-letter bytes over all streams
	used      int64 // bytes in use in the file, measured after the last commit
	reserved  int64 // bytes of appends admitted but not yet committed
	space     chan struct{}
	blocked   int
	expired   int64 // dead letters removed by DeadRetention since Open
	lastErr   error // the last commit's error, nil after a good commit

	trackMu sync.RWMutex
	track   map[string]bool // streams whose pending records are counted per key
}

func (s *Store) tracked(stream string) bool {
	s.trackMu.RLock()
	defer s.trackMu.RUnlock()
	return s.track[stream]
}

// TrackKeys makes the store count stream's pending records per key
// (KeyPending), from what the stream holds now on. Routing that must never
// split a key across two streams (overflow) asks it.
func (s *Store) TrackKeys(ctx context.Context, stream string) error {
	// A commit barrier: no request is half applied while the counts are
	// built from the file.
	return s.submit(ctx, 1, func(tx *bolt.Tx, _ *deltas) error {
		counts := map[string]int{}
		if b, err := streamBucket(tx, stream, false); err == nil {
			c := b.Bucket(bucketItems).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if env, err := decodeEnvelope(v); err == nil {
					counts[env.Key]++
				}
			}
		}
		s.trackMu.Lock()
		if s.track == nil {
			s.track = map[string]bool{}
		}
		s.track[stream] = true
		s.trackMu.Unlock()
		s.mu.Lock()
		s.stream(stream).keys = counts
		s.mu.Unlock()
		return nil
	}, nil)
}

// KeyPending returns how many records of key wait in stream (0 for a
// stream whose keys are not tracked).
func (s *Store) KeyPending(stream, key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[stream]; st != nil {
		return st.keys[key]
	}
	return 0
}

type streamState struct {
	wake            chan struct{} // closed and replaced when records are appended
	count, bytes    int64
	dead, deadBytes int64
	reserved        int64
	leases          map[uint64]time.Time
	// keys counts pending records per key, for streams whose keys are
	// tracked (TrackKeys); nil otherwise.
	keys map[string]int
	// scanFrom is a hint for Lease: every record below it is leased without
	// expiry (or gone). expiring counts leases with an expiry; while there
	// are any, Lease scans from the start so expired leases are found.
	scanFrom uint64
	expiring int
}

// release drops the leases of seqs. When the records stay in the stream
// (nack), the scan hint moves back so Lease offers them again; records that
// were acked or dead-lettered are gone and the hint stays. Call with mu held.
func (st *streamState) release(seqs []uint64, stay bool) {
	for _, q := range seqs {
		exp, ok := st.leases[q]
		if !ok {
			continue
		}
		delete(st.leases, q)
		if !exp.IsZero() {
			st.expiring--
		}
		if stay && q < st.scanFrom {
			st.scanFrom = q
		}
	}
}

// counters is the persisted form of a stream's counters.
type counters struct{ count, bytes, dead, deadBytes int64 }

func (c counters) encode() []byte {
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b[0:], uint64(c.count))
	binary.BigEndian.PutUint64(b[8:], uint64(c.bytes))
	binary.BigEndian.PutUint64(b[16:], uint64(c.dead))
	binary.BigEndian.PutUint64(b[24:], uint64(c.deadBytes))
	return b
}

func decodeCounters(b []byte) (counters, error) {
	if len(b) != 32 {
		return counters{}, fmt.Errorf("%w: stats of %d bytes", ErrCorrupt, len(b))
	}
	return counters{
		count: int64(binary.BigEndian.Uint64(b[0:])), bytes: int64(binary.BigEndian.Uint64(b[8:])),
		dead: int64(binary.BigEndian.Uint64(b[16:])), deadBytes: int64(binary.BigEndian.Uint64(b[24:])),
	}, nil
}

func itob(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// Open opens (creating if needed) the queue file at path. A second process
// opening the same file fails within OpenTimeout with ErrLocked.
func Open(path string, o Options) (*Store, error) {
	o.setDefaults()
	s := &Store{path: path, o: o, log: o.Log, streams: map[string]*streamState{}, space: make(chan struct{})}
	lock, err := lockFile(path, o)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	db, err := openBolt(path, o)
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	s.db = db
	s.pageSize = int64(db.Info().PageSize)
	fail := func(err error) (*Store, error) {
		_ = s.db.Close()
		_ = lock.Close()
		return nil, err
	}
	if !o.ReadOnly {
		if err := s.init(); err != nil {
			return fail(err)
		}
	} else if err := s.checkSchema(); err != nil {
		return fail(err)
	}
	if err := s.loadCounters(); err != nil {
		return fail(err)
	}
	if !o.ReadOnly && o.CompactMinBytes > 0 {
		if err := s.maybeCompact(); err != nil {
			return fail(err)
		}
	}
	s.measureAtOpen()
	if !o.ReadOnly {
		s.reqs = make(chan *request, 4096)
		s.done = make(chan struct{})
		go s.commitLoop()
	}
	return s, nil
}

func openBolt(path string, o Options) (*bolt.DB, error) {
	// The freelist is written with each commit, so that opening a large
	// file reads it instead of walking every page (a million queued
	// records: 2 ms instead of about 200 ms).
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.OpenTimeout, ReadOnly: o.ReadOnly, FreelistType: bolt.FreelistMapType, NoFreelistSync: false, NoSync: o.NoSync, NoGrowSync: o.NoSync})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open queue %s: %w (a running plantgate holds its lock; stop it first, e.g. systemctl stop plantgate)", path, ErrLocked)
		}
		return nil, fmt.Errorf("open queue %s: %w", path, err)
	}
	if o.MaxBytes > 0 {
		// Grow the file in steps that fit the quota, so it never overshoots
		// a small quota by bbolt's default 16 MiB step.
		db.AllocSize = int(min(max(o.MaxBytes/32, 1<<20), 16<<20))
	}
	return db, nil
}

// lockFile takes the queue's lock file (path + ".lock"): exclusive for a
// writer, shared for a read-only store. It is held for the store's whole
// life, also while a compaction at Open replaces the bbolt file, so no
// second process can open the queue in that moment (bbolt's own lock is on
// the file that is replaced).
func lockFile(path string, o Options) (*os.File, error) {
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600) //nolint:gosec // beside the queue file the gateway was configured with
	if err != nil {
		if o.ReadOnly && errors.Is(err, os.ErrPermission) {
			return nil, nil // a read-only look at a file we may not lock
		}
		return nil, fmt.Errorf("open queue lock %s.lock: %w", path, err)
	}
	how := syscall.LOCK_EX
	if o.ReadOnly {
		how = syscall.LOCK_SH
	}
	deadline := time.Now().Add(o.OpenTimeout)
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock queue %s.lock: %w", path, err)
		}
		if time.Now().After(deadline) {
			_ = f.Close()
			return nil, fmt.Errorf("open queue %s: %w (a running plantgate holds its lock; stop it first, e.g. systemctl stop plantgate)", path, ErrLocked)
		}
		<-time.After(10 * time.Millisecond)
	}
}

// measureAtOpen sets the bytes in use from the file as it is.
func (s *Store) measureAtOpen() {
	var hwm int64
	_ = s.db.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil })
	free := int64(s.db.Stats().FreePageN) * s.pageSize
	s.mu.Lock()
	s.used = max(hwm-free, 0)
	s.mu.Unlock()
}

// measure sets the bytes in use after a write transaction: the file's
// high-water mark less its free and pending pages.
func (s *Store) measure() int64 {
	var hwm int64
	_ = s.db.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil })
	return max(hwm-int64(s.db.Stats().FreeAlloc), 0)
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySchema); v != nil {
			if len(v) == 8 && binary.BigEndian.Uint64(v) == 1 {
				if err := migrateV1(tx, meta); err != nil {
					return fmt.Errorf("migrate queue file from schema version 1: %w", err)
				}
				s.log.Info().Msg("queue file migrated from schema version 1 to 2")
			} else if err := checkSchemaValue(v); err != nil {
				return err
			}
		} else {
			if err := meta.Put(keySchema, itob(SchemaVersion)); err != nil {
				return err
			}
			if err := meta.Put(keyCreated, itob(uint64(s.o.Now().UnixNano()))); err != nil {
				return err
			}
		}
		if _, err := tx.CreateBucketIfNotExists(bucketStreams); err != nil {
			return err
		}
		_, err = tx.CreateBucketIfNotExists(bucketState)
		return err
	})
}

// migrateHook, when set (tests only), runs in the migration's
// transaction after each stream.
var migrateHook func(stream string)

// migrateV1 brings a version 1 file to version 2 inside tx, so a crash
// leaves either the old file as it was or the migrated one: each stream
// gets the buckets version 2 keeps beside its records (marks, holds, held
// keys), then the version is written. Version 1's 8-byte idempotency
// values stay as they are and are still read.
func migrateV1(tx *bolt.Tx, meta *bolt.Bucket) error {
	if root := tx.Bucket(bucketStreams); root != nil {
		var names [][]byte
		if err := root.ForEachBucket(func(name []byte) error {
			names = append(names, bytes.Clone(name))
			return nil
		}); err != nil {
			return err
		}
		for _, name := range names {
			b := root.Bucket(name)
			for _, sb := range [][]byte{bucketMarks, bucketHeld, bucketHeldKey} {
				if _, err := sub(b, sb, true); err != nil {
					return fmt.Errorf("stream %s: %w", name, err)
				}
			}
			if migrateHook != nil {
				migrateHook(string(name))
			}
		}
	}
	return meta.Put(keySchema, itob(SchemaVersion))
}

func checkSchemaValue(v []byte) error {
	if len(v) != 8 {
		return fmt.Errorf("%w: schema_version of %d bytes", ErrCorrupt, len(v))
	}
	if got := binary.BigEndian.Uint64(v); got != SchemaVersion {
		if got > SchemaVersion {
			return fmt.Errorf("%w: the file has version %d, written by a newer plantgate; this one reads up to version %d (install the newer plantgate again)", ErrSchema, got, SchemaVersion)
		}
		return fmt.Errorf("%w: the file has version %d, written by an older plantgate; this one migrates it when the gateway starts (systemctl start plantgate), then it can be read", ErrSchema, got)
	}
	return nil
}

func (s *Store) checkSchema() error {
	return s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("%w: %s is not a plantgate queue (no meta bucket)", ErrCorrupt, s.path)
		}
		return checkSchemaValue(meta.Get(keySchema))
	})
}

func (s *Store) loadCounters() error {
	return s.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketStreams)
		if root == nil {
			return nil
		}
		return root.ForEachBucket(func(name []byte) error {
			b := root.Bucket(name)
			c, err := decodeCounters(b.Get(keyStats))
			if err != nil {
				return fmt.Errorf("stream %s: %w", name, err)
			}
			st := &streamState{count: c.count, bytes: c.bytes, dead: c.dead, deadBytes: c.deadBytes, leases: map[uint64]time.Time{}}
			s.streams[string(name)] = st
			s.total += c.bytes
			s.deadTotal += c.deadBytes
			return nil
		})
	})
}

// Commits returns how many group transactions the store has committed
// since it was opened; tests use it to see that concurrent requests share
// commits.
func (s *Store) Commits() int64 { return s.commits.Load() }

// Path returns the queue file's path.
func (s *Store) Path() string { return s.path }

// Close waits for pending commits, stops the committer and closes the file.
// Leases are released implicitly: they live only in memory. Close is safe to
// call twice.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.isClosed.Store(true)
	if s.reqs != nil {
		close(s.reqs)
	}
	s.closeMu.Unlock()
	if s.done != nil {
		<-s.done
	}
	s.mu.Lock()
	close(s.space) // wake blocked appenders; they see closed
	s.space = make(chan struct{})
	s.mu.Unlock()
	err := s.db.Close()
	if s.lock != nil {
		_ = s.lock.Close() // releases the flock
	}
	return err
}

func (s *Store) stream(name string) *streamState {
	st := s.streams[name]
	if st == nil {
		st = &streamState{leases: map[uint64]time.Time{}}
		s.streams[name] = st
	}
	return st
}

// Wait returns a channel that is closed the next time records are
// appended (or replayed) to stream. Runners select on it instead of polling.
func (s *Store) Wait(stream string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stream(stream)
	if st.wake == nil {
		st.wake = make(chan struct{})
	}
	return st.wake
}

// signalSpace wakes appenders blocked on a full queue. Call with mu held.
func (s *Store) signalSpace() {
	if s.blocked > 0 {
		close(s.space)
		s.space = make(chan struct{})
	}
}

// ---- group commit ----

// request is one mutation submitted to the committer.
type request struct {
	weight int
	apply  func(tx *bolt.Tx, d *deltas) error
	after  func(d *deltas) // runs after a successful commit, with mu held
	done   chan error
}

// deltas collects counter changes of one request.
type deltas struct {
	m map[string]*counters
	// keys holds, for streams whose keys are tracked (TrackKeys), the
	// change of pending records per key.
	keys map[string]map[string]int
}

// key books a change of pending records of key in stream (tracked
// streams only).
func (d *deltas) key(s *Store, stream, key string, n int) {
	if !s.tracked(stream) {
		return
	}
	if d.keys == nil {
		d.keys = map[string]map[string]int{}
	}
	if d.keys[stream] == nil {
		d.keys[stream] = map[string]int{}
	}
	d.keys[stream][key] += n
}

func (d *deltas) of(stream string) *counters {
	if d.m == nil {
		d.m = map[string]*counters{}
	}
	c := d.m[stream]
	if c == nil {
		c = &counters{}
		d.m[stream] = c
	}
	return c
}

func (s *Store) submit(ctx context.Context, weight int, apply func(*bolt.Tx, *deltas) error, after func(*deltas)) error {
	r := &request{weight: weight, apply: apply, after: after, done: make(chan error, 1)}
	s.closeMu.RLock()
	if s.closed || s.reqs == nil {
		s.closeMu.RUnlock()
		if s.reqs == nil && !s.closed {
			return fmt.Errorf("queue opened read-only")
		}
		return ErrClosed
	}
	s.reqs <- r
	s.closeMu.RUnlock()
	// The request is in the committer's hands: wait for its outcome even if
	// ctx ends, because returning early could let a caller assume nothing
	// was written when it was.
	return <-r.done
}

func (s *Store) commitLoop() {
	defer close(s.done)
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	var releaseC <-chan time.Time
	releaseWarned := false
	if s.o.ReleaseMappedEvery > 0 {
		release := time.NewTicker(s.o.ReleaseMappedEvery)
		defer release.Stop()
		releaseC = release.C
	}
	var batch []*request
	for {
		var first *request
		var ok bool
		select {
		case first, ok = <-s.reqs:
			if !ok {
				return
			}
		case <-prune.C:
			s.pruneIDs()
			s.expireDead()
			continue
		case <-releaseC:
			if err := s.releaseMapped(); err != nil && !releaseWarned {
				releaseWarned = true
				s.log.Warn().Err(err).Msg("cannot release the queue file's mapped pages: RSS grows with the queue (no harm to data)")
			}
			continue
		}
		batch = append(batch[:0], first)
		n := first.weight
	gather:
		for n < s.o.CommitMaxRecords {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break gather
				}
				batch = append(batch, r)
				n += r.weight
			default:
				if s.o.CommitMaxDelay <= 0 {
					break gather
				}
				t := time.NewTimer(s.o.CommitMaxDelay)
				select {
				case r, ok := <-s.reqs:
					t.Stop()
					if !ok {
						break gather
					}
					batch = append(batch, r)
					n += r.weight
				case <-t.C:
					break gather
				}
			}
		}
		s.commit(batch)
	}
}

// errRollback aborts a group transaction in which one request failed; the
// others are then committed without it.
var errRollback = errors.New("roll back the group commit")

// commit applies batch in one transaction. A request whose apply fails
// takes none of its writes into the file and does not fail its
// neighbours: the transaction is rolled back and run again without it
// (a rolled-back bbolt transaction writes nothing and costs no fsync).
func (s *Store) commit(batch []*request) {
	errs := make([]error, len(batch))
	ds := make([]deltas, len(batch))
	live := make([]bool, len(batch))
	for i := range live {
		live[i] = true
	}
	var err error
	for {
		failed := -1
		err = s.db.Update(func(tx *bolt.Tx) error {
			touched := map[string]bool{}
			for i, r := range batch {
				if !live[i] {
					continue
				}
				ds[i] = deltas{}
				if e := r.apply(tx, &ds[i]); e != nil {
					errs[i], failed = e, i
					return errRollback
				}
				for name := range ds[i].m {
					touched[name] = true
				}
			}
			// Persist the new counters of every touched stream in the same tx.
			if len(touched) == 0 {
				return nil
			}
			root := tx.Bucket(bucketStreams)
			s.mu.Lock()
			defer s.mu.Unlock()
			for name := range touched {
				var c counters
				if st := s.streams[name]; st != nil {
					c = counters{st.count, st.bytes, st.dead, st.deadBytes}
				}
				for i := range ds {
					if live[i] {
						if d := ds[i].m[name]; d != nil {
							c.count += d.count
							c.bytes += d.bytes
							c.dead += d.dead
							c.deadBytes += d.deadBytes
						}
					}
				}
				b := root.Bucket([]byte(name))
				if b == nil {
					continue // stream purged in this tx
				}
				if err := b.Put(keyStats, c.encode()); err != nil {
					return err
				}
			}
			return nil
		})
		if errors.Is(err, errRollback) && failed >= 0 {
			live[failed] = false
			ds[failed] = deltas{}
			continue
		}
		break
	}
	var used int64
	if err == nil {
		s.commits.Add(1)
		used = s.measure()
	}
	s.mu.Lock()
	if err == nil {
		s.used = used
	}
	s.lastErr = err
	for i, r := range batch {
		if err != nil && live[i] {
			errs[i] = fmt.Errorf("commit queue: %w", err)
		}
		if errs[i] == nil {
			for name, d := range ds[i].m {
				st := s.stream(name)
				if d.count > 0 && st.wake != nil {
					close(st.wake)
					st.wake = nil
				}
				st.count += d.count
				st.bytes += d.bytes
				st.dead += d.dead
				st.deadBytes += d.deadBytes
				s.total += d.bytes
				s.deadTotal += d.deadBytes
			}
			for name, ks := range ds[i].keys {
				st := s.stream(name)
				if st.keys == nil {
					continue
				}
				for k, n := range ks {
					if st.keys[k] += n; st.keys[k] <= 0 {
						delete(st.keys, k)
					}
				}
			}
		} else {
			ds[i] = deltas{}
		}
		if r.after != nil {
			r.after(&ds[i])
		}
	}
	s.signalSpace()
	s.mu.Unlock()
	for i, r := range batch {
		r.done <- errs[i]
	}
}

func streamBucket(tx *bolt.Tx, name string, create bool) (*bolt.Bucket, error) {
	root := tx.Bucket(bucketStreams)
	if root == nil {
		return nil, fmt.Errorf("%w: no streams bucket", ErrCorrupt)
	}
	b := root.Bucket([]byte(name))
	if b != nil || !create {
		if b == nil {
			return nil, fmt.Errorf("%w %q", ErrUnknownStream, name)
		}
		return b, nil
	}
	b, err := root.CreateBucket([]byte(name))
	if err != nil {
		return nil, err
	}
	for _, sub := range [][]byte{bucketItems, bucketDead, bucketIDs, bucketIdx, bucketMarks, bucketHeld, bucketHeldKey} {
		if _, err := b.CreateBucket(sub); err != nil {
			return nil, err
		}
	}
	// A stream purged before starts after its last sequences.
	meta := tx.Bucket(bucketMeta)
	for _, f := range []struct {
		prefix string
		bucket []byte
	}{{prefixSeqFloor, bucketItems}, {prefixDSeqFloor, bucketDead}} {
		if v := meta.Get([]byte(f.prefix + name)); len(v) == 8 {
			if err := b.Bucket(f.bucket).SetSequence(binary.BigEndian.Uint64(v)); err != nil {
				return nil, err
			}
		}
	}
	return b, b.Put(keyStats, counters{}.encode())
}

// sub returns a sub-bucket of a stream, creating it in a file written by
// an older version (where it did not exist yet). With create false a
// missing bucket is returned as nil.
func sub(b *bolt.Bucket, name []byte, create bool) (*bolt.Bucket, error) {
	if x := b.Bucket(name); x != nil || !create {
		return x, nil
	}
	return b.CreateBucket(name)
}

// ---- state ----

// StateWrite sets (or, with Delete, removes) one named value of a
// component's state. Pass it to Append, Ack or DeadLetter to write it in
// the same transaction as the records it concerns.
type StateWrite struct {
	Scope  string
	Name   string
	Value  []byte
	Delete bool
}

func applyStates(tx *bolt.Tx, ws []StateWrite) error {
	if len(ws) == 0 {
		return nil
	}
	root := tx.Bucket(bucketState)
	for _, w := range ws {
		b, err := root.CreateBucketIfNotExists([]byte(w.Scope))
		if err != nil {
			return err
		}
		if w.Delete {
			if err := b.Delete([]byte(w.Name)); err != nil {
				return err
			}
			continue
		}
		if err := b.Put([]byte(w.Name), bytes.Clone(w.Value)); err != nil {
			return err
		}
	}
	return nil
}

func checkStates(ws []StateWrite) error {
	for _, w := range ws {
		if !validName(w.Scope) || w.Name == "" {
			return fmt.Errorf("%w: state %q/%q", ErrBadName, w.Scope, w.Name)
		}
	}
	return nil
}

// PutState writes state durably.
func (s *Store) PutState(ctx context.Context, ws ...StateWrite) error {
	if err := checkStates(ws); err != nil {
		return err
	}
	return s.submit(ctx, len(ws), func(tx *bolt.Tx, _ *deltas) error { return applyStates(tx, ws) }, nil)
}

// GetState reads one state value; the slice is a copy.
func (s *Store) GetState(scope, name string) ([]byte, bool, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketState)
		if root == nil {
			return nil
		}
		b := root.Bucket([]byte(scope))
		if b == nil {
			return nil
		}
		if v := b.Get([]byte(name)); v != nil {
			out = bytes.Clone(v)
		}
		return nil
	})
	return out, out != nil, err
}

// ListState returns all names and values of a scope, sorted by name.
func (s *Store) ListState(scope string) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketState)
		if root == nil {
			return nil
		}
		b := root.Bucket([]byte(scope))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			out[string(k)] = bytes.Clone(v)
			return nil
		})
	})
	return out, err
}

// Scope returns a pipeline.StateStore over one scope.
func (s *Store) Scope(scope string) pipeline.StateStore { return scopedState{s: s, scope: scope} }

type scopedState struct {
	s     *Store
	scope string
}

func (c scopedState) Get(name string) ([]byte, bool, error) { return c.s.GetState(c.scope, name) }
func (c scopedState) Put(ctx context.Context, name string, v []byte) error {
	return c.s.PutState(ctx, StateWrite{Scope: c.scope, Name: name, Value: v})
}
func (c scopedState) Delete(ctx context.Context, name string) error {
	return c.s.PutState(ctx, StateWrite{Scope: c.scope, Name: name, Delete: true})
}

// List returns every name and value of the scope.
func (c scopedState) List() (map[string][]byte, error) { return c.s.ListState(c.scope) }

// Write applies several writes of the scope in one durable transaction.
func (c scopedState) Write(ctx context.Context, ws ...pipeline.StateWrite) error {
	qs := make([]StateWrite, len(ws))
	for i, w := range ws {
		qs[i] = StateWrite{Scope: c.scope, Name: w.Name, Value: w.Value, Delete: w.Delete}
	}
	return c.s.PutState(ctx, qs...)
}

// ---- helpers for listing ----

// Streams returns the names of all streams, sorted.
func (s *Store) Streams() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.streams))
	for n := range s.streams {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// FileSize returns the queue file's size in bytes.
func (s *Store) FileSize() int64 {
	fi, err := os.Stat(s.path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
