// Package inputs holds the registry of source plugins. Each plugin lives in
// plugins/inputs/<name> and registers itself from init; plugins/all imports
// them all.
package inputs

import (
	"fmt"
	"sort"
	"sync"

	"github.com/plantgate/plantgate/internal/pipeline"
)

var (
	mu        sync.RWMutex
	factories = map[string]pipeline.SourceFactory{}
)

// Add registers a source factory. It panics on an empty or duplicate type
// or a factory without NewConfig or New: those are programming errors.
func Add(f pipeline.SourceFactory) {
	mu.Lock()
	defer mu.Unlock()
	if f.Type == "" || f.NewConfig == nil || f.New == nil {
		panic(fmt.Sprintf("inputs: incomplete factory %q", f.Type))
	}
	if _, dup := factories[f.Type]; dup {
		panic(fmt.Sprintf("inputs: source type %q registered twice", f.Type))
	}
	factories[f.Type] = f
}

// Lookup returns the factory of a source type.
func Lookup(typ string) (pipeline.SourceFactory, bool) {
	mu.RLock()
	defer mu.RUnlock()
	f, ok := factories[typ]
	return f, ok
}

// Types returns the registered source types, sorted.
func Types() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(factories))
	for t := range factories {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// NewConfig returns a fresh config struct for typ, for the config loader.
func NewConfig(typ string) (any, bool) {
	f, ok := Lookup(typ)
	if !ok {
		return nil, false
	}
	return f.NewConfig(), true
}
