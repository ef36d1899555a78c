package flow

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/backoff"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// RunnerConfig configures a sink runner.
type RunnerConfig struct {
	Stream string
	// MaxBatch is the most records per Write.
	MaxBatch int
	// Parallelism is the number of lanes (keys written concurrently).
	Parallelism int
	// Retry is the backoff for transient failures.
	Retry backoff.Policy
	// DrainTimeout bounds the last batches when stopping.
	DrainTimeout time.Duration
	// WriteTimeout bounds one Write (0: none beyond ctx).
	WriteTimeout time.Duration
	// Remap maps a replayed record (Record.Remap) again from its source
	// message through its flow's current config (Router.Remap); nil
	// delivers replayed records as they are.
	Remap func(pipeline.Record) (pipeline.Record, error)
}

// Runner delivers one stream to one sink. See the package doc for how it
// keeps order per key.
type Runner struct {
	cfg  RunnerConfig
	q    Queue
	sink pipeline.Sink
	log  zerolog.Logger
	m    *Metrics

	mu           sync.Mutex
	outstanding  map[uint64]bool
	throttledTil time.Time
	// throttledSince is when the current throttling episode began, and
	// lastThrottle the last 429 in it: an episode ends after
	// throttleQuiet without a 429.
	throttledSince, lastThrottle time.Time
	st                           RunnerStatus
	// paused is set by Pause and cleared by Resume: while set the runner leases
	// nothing new; resume wakes it.
	paused   bool
	resumeCh chan struct{}
	// parked is set while the loop waits on resumeCh.
	parked bool
}

// Pause stops the runner from leasing records; what is in flight
// finishes. Records keep queueing.
func (r *Runner) Pause() {
	r.mu.Lock()
	if !r.paused {
		r.paused, r.resumeCh = true, make(chan struct{})
		r.st.State = "paused"
	}
	r.mu.Unlock()
}

// Resume undoes Pause.
func (r *Runner) Resume() {
	r.mu.Lock()
	if r.paused {
		r.paused = false
		close(r.resumeCh)
		r.st.State = "idle"
	}
	r.mu.Unlock()
}

// Quiesce pauses the runner and waits until it holds no lease, so the
// stream's records can be changed underneath it (an operator's release
// of records in doubt). The returned resume undoes the pause unless the
// runner was already paused. On ctx's end it resumes and fails.
func (r *Runner) Quiesce(ctx context.Context) (resume func(), err error) {
	was := r.Paused()
	r.Pause()
	resume = func() {
		if !was {
			r.Resume()
		}
	}
	for {
		r.mu.Lock()
		idle := r.parked && len(r.outstanding) == 0 || r.st.State == "stopped"
		n := len(r.outstanding)
		r.mu.Unlock()
		if idle {
			return resume, nil
		}
		select {
		case <-ctx.Done():
			resume()
			return nil, fmt.Errorf("stream %s still has %d records in delivery: %w", r.cfg.Stream, n, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Paused reports whether the runner is paused.
func (r *Runner) Paused() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.paused
}

// RunnerStatus is a runner's state for status output.
type RunnerStatus struct {
	Stream      string    `json:"stream"`
	State       string    `json:"state"` // idle, delivering, retrying, throttled, stopped
	Delivered   int64     `json:"delivered"`
	DeadLetters int64     `json:"dead_lettered"`
	Retries     int64     `json:"retries"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	LastOKAt    time.Time `json:"last_ok_at,omitzero"`
	InFlight    int       `json:"in_flight"`
}

// NewRunner builds a runner; Run starts it.
func NewRunner(cfg RunnerConfig, q Queue, sink pipeline.Sink, log zerolog.Logger, m *Metrics) *Runner {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 100
	}
	if cfg.Parallelism <= 0 {
		cfg.Parallelism = 1
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	m.initStream(cfg.Stream)
	return &Runner{cfg: cfg, q: q, sink: sink, log: log.With().Str(logging.FieldStream, cfg.Stream).Logger(), m: m,
		outstanding: map[uint64]bool{}, st: RunnerStatus{Stream: cfg.Stream, State: "idle"}}
}

// Status returns a snapshot of the runner's state.
func (r *Runner) Status() RunnerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.st
	s.InFlight = len(r.outstanding)
	return s
}

func (r *Runner) setState(s string) {
	r.mu.Lock()
	if r.paused && s == "idle" {
		s = "paused"
	}
	r.st.State = s
	r.mu.Unlock()
}

// Run delivers until ctx is cancelled. It then stops leasing, lets lanes
// finish their current batch within DrainTimeout, and releases every lease
// it still holds so those records are offered again on the next start.
func (r *Runner) Run(ctx context.Context) error {
	// Writes run on a context that outlives ctx by DrainTimeout.
	writeCtx, cancelWrites := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWrites()
	stopAfter := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(r.cfg.DrainTimeout, cancelWrites)
		_ = t
	})
	defer stopAfter()

	window := r.cfg.Parallelism * r.cfg.MaxBatch * 2
	if window < 64 {
		window = 64
	}
	lanes := make([]chan pipeline.Record, r.cfg.Parallelism)
	var wg sync.WaitGroup
	for i := range lanes {
		lanes[i] = make(chan pipeline.Record, window)
		wg.Add(1)
		go func(in chan pipeline.Record) {
			defer wg.Done()
			r.lane(ctx, writeCtx, in)
		}(lanes[i])
	}
	var err error
	for ctx.Err() == nil {
		r.mu.Lock()
		room := window - len(r.outstanding)
		paused, resume := r.paused, r.resumeCh
		r.mu.Unlock()
		if paused {
			r.mu.Lock()
			r.parked = true
			r.mu.Unlock()
			select {
			case <-resume:
			case <-ctx.Done():
			}
			r.mu.Lock()
			r.parked = false
			r.mu.Unlock()
			continue
		}
		wake := r.q.Wait(r.cfg.Stream)
		if room <= 0 {
			// Wait for lanes to finish something.
			if e := backoff.Wait(ctx, 5*time.Millisecond); e != nil {
				break
			}
			continue
		}
		recs, lerr := r.q.Lease(r.cfg.Stream, room, -1)
		if lerr != nil {
			r.log.Error().Err(lerr).Msg("lease records")
			if e := backoff.Wait(ctx, time.Second); e != nil {
				break
			}
			continue
		}
		if len(recs) == 0 {
			select {
			case <-wake:
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		recs = r.remap(ctx, recs)
		r.mu.Lock()
		for _, rec := range recs {
			r.outstanding[rec.Seq] = true
		}
		r.mu.Unlock()
		for _, rec := range recs {
			lanes[laneOf(rec.Key, len(lanes))] <- rec
		}
	}
	for _, l := range lanes {
		close(l)
	}
	wg.Wait()
	// Release what is still leased: records queued in lanes that were not
	// written, and records of a batch cut off by the drain timeout.
	r.mu.Lock()
	var left []uint64
	for q := range r.outstanding {
		left = append(left, q)
	}
	r.outstanding = map[uint64]bool{}
	r.st.State = "stopped"
	r.mu.Unlock()
	if len(left) > 0 {
		r.q.Nack(r.cfg.Stream, left)
	}
	return err
}

// remap maps replayed records again (RunnerConfig.Remap) before they are
// assigned a lane, since the mapping may change their key. A record whose
// new mapping fails goes back to the dead letters with the new reason.
func (r *Runner) remap(ctx context.Context, recs []pipeline.Record) []pipeline.Record {
	if r.cfg.Remap == nil {
		return recs
	}
	out := recs[:0]
	var dead []queue.Dead
	for _, rec := range recs {
		if !rec.Remap {
			out = append(out, rec)
			continue
		}
		nr, err := r.cfg.Remap(rec)
		if err != nil {
			dead = append(dead, queue.Dead{Seq: rec.Seq, Reason: reason(err), Attempts: rec.Attempts})
			continue
		}
		out = append(out, nr)
	}
	if len(dead) > 0 {
		r.finishDead(ctx, dead)
	}
	return out
}

// finishDead dead-letters records, retrying the queue until it succeeds
// or ctx ends: the records stay leased meanwhile, so nothing else delivers
// them, and a restart offers them again.
func (r *Runner) finishDead(ctx context.Context, dead []queue.Dead) {
	for {
		err := r.finish(nil, dead)
		if err == nil {
			return
		}
		r.log.Error().Err(err).Msg("record delivery outcome")
		if backoff.Wait(ctx, time.Second) != nil {
			return
		}
	}
}

func laneOf(key string, n int) int {
	if n == 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// lane writes the records of its keys in order, one batch at a time.
func (r *Runner) lane(ctx, writeCtx context.Context, in chan pipeline.Record) {
	var batch []pipeline.Record
	for {
		if len(batch) == 0 {
			if ctx.Err() != nil {
				return // stopping: leave queued records to be released
			}
			rec, ok := <-in
			if !ok {
				return
			}
			batch = append(batch, rec)
		}
	fill:
		for len(batch) < r.cfg.MaxBatch {
			select {
			case rec, ok := <-in:
				if !ok {
					break fill
				}
				batch = append(batch, rec)
			default:
				break fill
			}
		}
		batch = r.deliver(ctx, writeCtx, batch)
		if len(batch) > 0 && ctx.Err() != nil {
			return // retries wait for the next start
		}
	}
}

// deliver writes batch until every record is acked or dead-lettered, or
// ctx ends; it returns the records still pending.
func (r *Runner) deliver(ctx, writeCtx context.Context, batch []pipeline.Record) []pipeline.Record {
	attempt := 0
	for len(batch) > 0 {
		if wait := r.throttleWait(); wait > 0 {
			r.setState("throttled")
			if backoff.Wait(ctx, wait) != nil {
				return batch
			}
		}
		r.setState("delivering")
		wctx, cancel := writeCtx, context.CancelFunc(func() {})
		if r.cfg.WriteTimeout > 0 {
			wctx, cancel = context.WithTimeout(writeCtx, r.cfg.WriteTimeout)
		}
		start := time.Now()
		err := r.safeWrite(wctx, batch)
		cancel()
		r.m.WriteSeconds.WithLabelValues(r.cfg.Stream).Observe(time.Since(start).Seconds())
		var acked []pipeline.Record
		var dead []queue.Dead
		var retry []pipeline.Record
		var pe *pipeline.PartialError
		var te *pipeline.ThrottleError
		switch {
		case err == nil:
			acked = batch
		case errors.As(err, &pe):
			done := map[int]bool{}
			for _, i := range pe.Accepted {
				if i >= 0 && i < len(batch) && !done[i] {
					done[i] = true
					acked = append(acked, batch[i])
				}
			}
			for i, why := range pe.Rejected {
				if i >= 0 && i < len(batch) && !done[i] {
					done[i] = true
					dead = append(dead, queue.Dead{Seq: batch[i].Seq, Reason: reason(why), Attempts: batch[i].Attempts + 1})
				}
			}
			for i, rec := range batch {
				if !done[i] {
					retry = append(retry, rec)
				}
			}
			if pe.Err != nil {
				err = pe.Err
			}
		case pipeline.IsPermanent(err):
			for _, rec := range batch {
				dead = append(dead, queue.Dead{Seq: rec.Seq, Reason: reason(err), Attempts: rec.Attempts + 1})
			}
		default:
			retry = batch
		}
		// Book the outcome until the queue takes it. Writing the batch
		// again instead would send delivered records a second time.
		for {
			ferr := r.finish(acked, dead)
			if ferr == nil {
				break
			}
			r.log.Error().Err(ferr).Msg("record delivery outcome")
			if backoff.Wait(ctx, time.Second) != nil {
				return batch
			}
			if len(acked) > 0 {
				// finish acks before it dead-letters: once the ack went
				// through, only the dead letters are left to book.
				if !r.isOutstanding(acked[0].Seq) {
					acked = nil
				}
			}
		}
		if len(retry) == 0 {
			r.setState("idle")
			return nil
		}
		for i := range retry {
			retry[i].Attempts++
		}
		batch = retry
		attempt++
		cause := causeTransient
		var wait time.Duration
		if errors.As(err, &te) {
			cause = causeThrottled
			wait = te.After
			r.throttle(wait)
			r.mu.Lock()
			now := time.Now()
			if r.throttledSince.IsZero() || now.Sub(r.lastThrottle) > throttleQuiet {
				r.throttledSince = now
			}
			r.lastThrottle = now
			r.mu.Unlock()
			attempt = 0 // throttling is not a failure of the record
		} else {
			wait = r.cfg.Retry.Delay(attempt)
		}
		r.m.Retries.WithLabelValues(r.cfg.Stream, cause).Inc()
		r.mu.Lock()
		r.st.Retries++
		r.st.LastError, r.st.LastErrorAt = logging.RedactText(errString(err)), time.Now().UTC()
		r.st.State = "retrying"
		r.mu.Unlock()
		level := zerolog.WarnLevel
		if attempt < 3 {
			level = zerolog.InfoLevel
		}
		r.log.WithLevel(level).Err(err).Int(logging.FieldRecords, len(batch)).Int(logging.FieldAttempt, attempt).Dur(logging.FieldRetryIn, wait).Msg("write failed, will retry")
		if backoff.Wait(ctx, wait) != nil {
			return batch
		}
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return "retry requested"
	}
	return err.Error()
}

func reason(err error) string {
	if err == nil {
		return "rejected"
	}
	return logging.RedactText(err.Error())
}

// safeWrite calls the sink, turning a panic into a transient error so a
// sink bug never crashes the daemon or loses a record.
func (r *Runner) safeWrite(ctx context.Context, batch []pipeline.Record) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("sink panicked: %v", p)
		}
	}()
	return r.sink.Write(ctx, batch)
}

func (r *Runner) finish(acked []pipeline.Record, dead []queue.Dead) error {
	ctx := context.Background()
	if len(acked) > 0 {
		seqs := make([]uint64, len(acked))
		for i, rec := range acked {
			seqs[i] = rec.Seq
		}
		if err := r.q.Ack(ctx, r.cfg.Stream, seqs); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
		r.m.Delivered.WithLabelValues(r.cfg.Stream).Add(float64(len(seqs)))
		r.mu.Lock()
		for _, q := range seqs {
			delete(r.outstanding, q)
		}
		r.st.Delivered += int64(len(seqs))
		r.st.LastOKAt = time.Now().UTC()
		r.mu.Unlock()
	}
	if len(dead) > 0 {
		if err := r.q.DeadLetter(ctx, r.cfg.Stream, dead); err != nil {
			return fmt.Errorf("dead-letter: %w", err)
		}
		r.m.DeadLettered.WithLabelValues(r.cfg.Stream).Add(float64(len(dead)))
		r.mu.Lock()
		for _, d := range dead {
			delete(r.outstanding, d.Seq)
		}
		r.st.DeadLetters += int64(len(dead))
		r.st.LastError, r.st.LastErrorAt = dead[len(dead)-1].Reason, time.Now().UTC()
		r.mu.Unlock()
		for _, d := range dead {
			r.log.Error().Uint64(logging.FieldSeq, d.Seq).Str(logging.FieldReason, d.Reason).Msg("record dead-lettered")
		}
	}
	return nil
}

// throttleQuiet ends a throttling episode: a stream that F&O has not
// answered 429 for this long is no longer throttled.
const throttleQuiet = 10 * time.Second

// ThrottledFor is how long F&O has been throttling the stream: since the
// first 429 of an episode whose last 429 is less than throttleQuiet ago
// (0 when it is not throttled).
func (r *Runner) ThrottledFor() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.throttledSince.IsZero() || time.Since(r.lastThrottle) > throttleQuiet {
		return 0
	}
	return time.Since(r.throttledSince)
}

// Stream returns the runner's stream.
func (r *Runner) Stream() string { return r.cfg.Stream }

func (r *Runner) isOutstanding(seq uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.outstanding[seq]
}

func (r *Runner) throttle(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := time.Now().Add(d); t.After(r.throttledTil) {
		r.throttledTil = t
	}
}

func (r *Runner) throttleWait() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Until(r.throttledTil)
}
