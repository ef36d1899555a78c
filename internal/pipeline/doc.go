// Package pipeline holds plantgate's core contracts: the Message a source
// emits, the Record a sink writes, the Source, Sink and Emitter interfaces,
// the plugin factories, and the error kinds a sink returns.
//
//	source.Run(ctx, emitter)                       sink.Write(ctx, batch)
//	   |  Emit(msgs) returns after fsync              ^
//	   v                                              |
//	 flows: when -> key/id -> map  --> queue stream (flow.sink) --> sink runner
//
// The contracts are small on purpose; optional behaviour (Closer, Prober,
// StatusReporter) is discovered with type assertions.
package pipeline
