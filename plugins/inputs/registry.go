// Package inputs holds the registry of source plugins. Each plugin lives in
// plugins/inputs/<name> and registers itself from init with Add;
// plugins/all imports them all.
package inputs

import "github.com/plantgate/plantgate/internal/pipeline"

var registry = pipeline.NewRegistry[pipeline.SourceFactory]("source")

// Add registers a source factory; it panics on an empty or duplicate type.
func Add(f pipeline.SourceFactory) { registry.Add(f) }

// Lookup returns the factory of a source type.
func Lookup(typ string) (pipeline.SourceFactory, bool) { return registry.Lookup(typ) }

// Types returns the registered source types, sorted.
func Types() []string { return registry.Types() }

// NewConfig returns a fresh config struct for typ, for the config loader.
func NewConfig(typ string) (any, bool) { return registry.NewConfig(typ) }
