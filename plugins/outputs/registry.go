// Package outputs holds the registry of sink plugins. Each plugin lives in
// plugins/outputs/<name> and registers itself from init with Add;
// plugins/all imports them all.
package outputs

import "github.com/plantgate/plantgate/internal/pipeline"

var registry = pipeline.NewRegistry[pipeline.SinkFactory]("sink")

// Add registers a sink factory; it panics on an empty or duplicate type.
func Add(f pipeline.SinkFactory) { registry.Add(f) }

// Lookup returns the factory of a sink type.
func Lookup(typ string) (pipeline.SinkFactory, bool) { return registry.Lookup(typ) }

// Types returns the registered sink types, sorted.
func Types() []string { return registry.Types() }

// NewConfig returns a fresh config struct for typ, for the config loader.
func NewConfig(typ string) (any, bool) { return registry.NewConfig(typ) }
