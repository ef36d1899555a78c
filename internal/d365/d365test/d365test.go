package d365test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/backoff"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// Tenant is the tenant the test environments use.
const Tenant = "00000000-0000-0000-0000-0000000000aa"

// FOEnv returns the config of an environment on em: its URL, the default
// client and secret, the emulator as authority, its CA, a generous
// ceiling for the limiter and a short timeout.
func FOEnv(em *foemu.Emulator) *config.FOEnv {
	return &config.FOEnv{
		URL: em.EnvironmentURL(), TenantID: Tenant, ClientID: foemu.DefaultClientID,
		ClientSecret: logging.NewSecret(foemu.DefaultClientSecret), AuthorityURL: em.BaseURL(),
		Company: "USMF", CAFile: em.CAFile(), Timeout: config.Duration(5 * time.Second),
		MaxRequestsPerSecond: 2000, MaxConcurrent: 16,
	}
}

// Option adjusts an environment's config or options.
type Option func(*config.FOEnv, *d365.Options)

// FastBreaker makes the circuit breaker open after 3 failures and probe
// every 100 ms (up to 400 ms).
func FastBreaker(c *config.FOEnv, o *d365.Options) {
	o.Breaker = d365.BreakerConfig{Failures: 3, Delay: 100 * time.Millisecond, MaxDelay: 400 * time.Millisecond}
}

// Env builds an F&O environment on em.
func Env(t testing.TB, em *foemu.Emulator, opts ...Option) *d365.Env {
	t.Helper()
	c := FOEnv(em)
	o := d365.Options{Log: zerolog.Nop()}
	for _, f := range opts {
		f(c, &o)
	}
	e, err := d365.NewEnv("test", c, o)
	if err != nil {
		t.Fatalf("d365.NewEnv: %v", err)
	}
	// Connections the transport dialled but never used would hold up the
	// emulator's shutdown for 5 s.
	t.Cleanup(e.CloseIdleConnections)
	return e
}

// Store opens a queue in a temporary directory, closed when the test ends.
func Store(t testing.TB) *queue.Store {
	t.Helper()
	s, err := queue.Open(filepath.Join(t.TempDir(), "queue.db"), queue.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatalf("open queue: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// PluginEnv returns the pipeline.Env a sink called name receives in a
// gateway: its state and per-record bookkeeping in store (scope
// sink.<name>; nil store: none), one flow "f" with stream "f.<name>", and
// fe as the environment every name resolves to. Records a sink tracks
// must be queued in store (Append) before they are written.
func PluginEnv(t testing.TB, name string, fe *d365.Env, store *queue.Store) pipeline.Env {
	t.Helper()
	env := pipeline.Env{
		Name: name, Log: zerolog.Nop(), Now: time.Now,
		Resolve: func(kind, _ string) (any, error) {
			if kind != d365.ResolveKind {
				return nil, nil
			}
			return fe, nil
		},
	}
	if store != nil {
		env.State = store.Scope("sink." + name)
		env.Records = store
		env.Flows = []pipeline.FlowInfo{{Name: "f", Stream: "f." + name}}
	}
	return env
}

// Append appends records to stream and returns their sequences.
func Append(t testing.TB, store *queue.Store, stream string, recs ...pipeline.Record) []uint64 {
	t.Helper()
	entries := make([]queue.Entry, len(recs))
	for i, r := range recs {
		entries[i] = queue.Entry{Stream: stream, Record: r}
	}
	res, err := store.Append(context.Background(), entries)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return res.Seqs
}

// Runner runs a flow runner delivering stream to sink until the test
// ends (then it stops it and waits). Unset fields of cfg get test values:
// batches of 20, 4 lanes, retries from 20 ms to 200 ms.
func Runner(t testing.TB, store *queue.Store, stream string, sink pipeline.Sink, cfg flow.RunnerConfig) *flow.Runner {
	t.Helper()
	cfg.Stream = stream
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = 20
	}
	if cfg.Parallelism == 0 {
		cfg.Parallelism = 4
	}
	if cfg.Retry.Initial == 0 {
		cfg.Retry = backoff.Policy{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 2 * time.Second
	}
	r := flow.NewRunner(cfg, store, sink, zerolog.Nop(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return r
}

// Drained polls until stream has no pending records, failing the test
// after timeout.
func Drained(t testing.TB, store *queue.Store, stream string, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, "stream "+stream+" drained", func() bool {
		recs, err := store.List(stream, 0, 1)
		return err == nil && len(recs) == 0
	})
}

// Dead returns the dead letters of stream.
func Dead(t testing.TB, store *queue.Store, stream string) []queue.DeadLetterRecord {
	t.Helper()
	dl, err := store.ListDead(stream, 0, 0)
	if err != nil {
		t.Fatalf("list dead letters: %v", err)
	}
	return dl
}

// WaitFor polls cond every 5 ms until it holds, failing the test after
// timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}
