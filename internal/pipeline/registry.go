package pipeline

import (
	"fmt"
	"sort"
	"sync"
)

// Factory is what a plugin registry holds: SourceFactory or SinkFactory.
type Factory interface {
	SourceFactory | SinkFactory
}

// Registry maps plugin type names to factories. plugins/inputs and
// plugins/outputs each hold one; plugins register from init.
type Registry[F Factory] struct {
	kind string
	mu   sync.RWMutex
	m    map[string]F
}

// NewRegistry returns an empty registry for plugins of kind ("source" or "sink").
func NewRegistry[F Factory](kind string) *Registry[F] {
	return &Registry[F]{kind: kind, m: map[string]F{}}
}

func parts[F Factory](f F) (typ string, complete bool, newConfig func() any) {
	switch x := any(f).(type) {
	case SourceFactory:
		return x.Type, x.Type != "" && x.NewConfig != nil && x.New != nil, x.NewConfig
	case SinkFactory:
		return x.Type, x.Type != "" && x.NewConfig != nil && x.New != nil, x.NewConfig
	}
	return "", false, nil
}

// Add registers f. It panics on an incomplete factory or a duplicate type:
// both are programming errors found at start-up.
func (r *Registry[F]) Add(f F) {
	typ, complete, _ := parts(f)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !complete {
		panic(fmt.Sprintf("%s registry: incomplete factory %q", r.kind, typ))
	}
	if _, dup := r.m[typ]; dup {
		panic(fmt.Sprintf("%s registry: type %q registered twice", r.kind, typ))
	}
	r.m[typ] = f
}

// Lookup returns the factory of typ.
func (r *Registry[F]) Lookup(typ string) (F, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	f, ok := r.m[typ]
	return f, ok
}

// Types returns the registered types, sorted.
func (r *Registry[F]) Types() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.m))
	for t := range r.m {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// NewConfig returns a fresh config struct for typ, for the config loader.
func (r *Registry[F]) NewConfig(typ string) (any, bool) {
	f, ok := r.Lookup(typ)
	if !ok {
		return nil, false
	}
	_, _, nc := parts(f)
	return nc(), true
}
