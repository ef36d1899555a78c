// Package d365test builds F&O environments and plugin environments
// against an in-process fo-emulator, for the tests of the F&O sinks.
//
//	em := foemutest.Start(t)
//	fe := d365test.Env(t, em)
//	sink, err := foodata.New(cfg, d365test.PluginEnv(t, "orders", fe, store))
package d365test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/d365"
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
// gateway: its state in store (scope sink.<name>; nil store: no state)
// and fe as the environment every name resolves to.
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
	}
	return env
}
