package d365

import (
	"fmt"
	"sort"
	"sync"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/logging"
)

// Registry builds the F&O environments of a config on first use and hands
// the same *Env to every sink that names it, so they share one token
// cache, limiter and circuit breaker. It is safe for concurrent use.
type Registry struct {
	cfg map[string]*config.FOEnv
	o   Options

	mu   sync.Mutex
	envs map[string]*Env
}

// NewRegistry returns a registry over the fo: section of a config.
// o.Log is the parent of each environment's logger.
func NewRegistry(cfg map[string]*config.FOEnv, o Options) *Registry {
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return &Registry{cfg: cfg, o: o, envs: map[string]*Env{}}
}

// Env returns environment name, building it on first use.
func (r *Registry) Env(name string) (*Env, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.envs[name]; ok {
		return e, nil
	}
	c, ok := r.cfg[name]
	if !ok {
		return nil, fmt.Errorf("no fo environment %q in the config", name)
	}
	o := r.o
	o.Log = logging.Component(r.o.Log, "fo", "", name)
	e, err := NewEnv(name, c, o)
	if err != nil {
		return nil, err
	}
	r.envs[name] = e
	return e, nil
}

// Resolve implements pipeline.Env.Resolve for kind ResolveKind.
func (r *Registry) Resolve(kind, name string) (any, error) {
	if kind != ResolveKind {
		return nil, fmt.Errorf("nothing of kind %q to resolve", kind)
	}
	return r.Env(name)
}

// Envs returns the environments built so far, sorted by name.
func (r *Registry) Envs() []*Env {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Env, 0, len(r.envs))
	for _, e := range r.envs {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Metrics returns the shared collectors.
func (r *Registry) Metrics() *Metrics { return r.o.Metrics }

// CloseIdleConnections closes the idle connections of every environment.
func (r *Registry) CloseIdleConnections() {
	for _, e := range r.Envs() {
		e.CloseIdleConnections()
	}
}
