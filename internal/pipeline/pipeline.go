package pipeline

import (
	"context"
	"time"

	"github.com/plantgate/plantgate/internal/metrics"
	"github.com/rs/zerolog"
)

// Message is what a source hands to the flow engine: one upstream message
// (an MQTT publish, an OPC UA data change, a line of a file).
type Message struct {
	// Raw is the exact bytes received. They are kept with a dead letter so
	// an operator can see and replay what arrived.
	Raw []byte
	// Payload is the decoded payload (usually map[string]any). Nil when
	// DecodeErr is set.
	Payload any
	// DecodeErr is set when the source could not decode Raw. The message is
	// dead-lettered with this reason instead of being routed.
	DecodeErr error
	// Meta carries source metadata visible to flow expressions as "meta"
	// (for MQTT: topic, qos, retained, received_at; for OPC UA: node_id).
	Meta map[string]any
	// Time is when the message was received (UTC).
	Time time.Time
}

// Record is one queued unit of work for one sink: the mapped fields of a
// message that a flow routed to that sink.
type Record struct {
	// Stream is the queue stream ("flow.sink") the record belongs to.
	Stream string
	// Seq is the record's position in its stream; assigned by the queue.
	Seq uint64
	// Key is the order key: records with the same key are delivered in order.
	Key string
	// ID is the idempotency key (may be empty).
	ID string
	// Source is the source instance that produced the record.
	Source string
	// Time is when the source received the message.
	Time time.Time
	// Fields are the mapped fields, ready for the sink.
	Fields map[string]any
	// Meta is the source metadata of the original message.
	Meta map[string]any
	// Raw is the original message bytes, when the flow keeps them.
	Raw []byte
	// Attempts counts previous delivery attempts in this process.
	Attempts int
}

// Emitter receives messages from a source.
type Emitter interface {
	// Emit routes msgs through the source's flows and appends the results
	// to the queue. It returns only after an fsync'd commit (or after the
	// messages were durably dead-lettered or recognised as duplicates);
	// only then may the source acknowledge upstream. An error means nothing
	// may be acknowledged; the source should retry or let the upstream
	// redeliver. Emit blocks while the queue is full and on_full is block.
	// Emit is safe for concurrent use.
	Emit(ctx context.Context, msgs ...Message) error
}

// Source produces messages.
type Source interface {
	// Run blocks until ctx is cancelled, emitting messages, and returns nil
	// on a clean stop. A returned error is logged and the source restarted
	// with backoff by the runner.
	Run(ctx context.Context, em Emitter) error
}

// Sink delivers records.
type Sink interface {
	// Write delivers batch (in queue order, possibly several keys) and
	// reports the outcome: nil (all delivered), *PartialError, an error
	// wrapped by Permanent, a *ThrottleError, or any other error (transient:
	// the whole batch is retried). Write is never called concurrently for
	// records of the same key, but may be called concurrently for different
	// keys (see SinkRunner parallelism). A sink that writes records one by
	// one must stop writing a key's records after one of them failed
	// transiently; ForEach does that.
	Write(ctx context.Context, batch []Record) error
}

// Closer is implemented by plugins that hold resources. Close is called
// once after the last Run/Write returned; it must be safe to call before
// use and twice.
type Closer interface {
	Close(ctx context.Context) error
}

// Prober is implemented by plugins that can tell whether their peer is
// reachable; it feeds /readyz and startup: probe.
type Prober interface {
	Probe(ctx context.Context) error
}

// StatusReporter is implemented by plugins with status worth showing on the
// status page and in /api/v1/status (connected, last message, counters).
// The map must be JSON-encodable and must not contain secrets.
type StatusReporter interface {
	Status() map[string]any
}

// Env is what a plugin receives at construction. Nothing reaches a plugin by
// reflection or globals.
type Env struct {
	// Name is the instance name from the config.
	Name string
	// Log is pre-tagged with component, plugin and instance.
	Log zerolog.Logger
	// Metrics registers the plugin's collectors on the gateway's registry.
	Metrics metrics.Registerer
	// Now is the clock; tests may replace it.
	Now func() time.Time
	// State is the plugin's durable named state in the queue file; nil
	// where no queue is open (check-config).
	State StateStore
	// Flows are the flows connected to the plugin: for a sink those that
	// route to it, for a source those that read from it.
	Flows []FlowInfo
	// Resolve gives access to shared gateway objects (an F&O environment's
	// client and limiter) by name; nil when none.
	Resolve func(kind, name string) (any, error)
}

// FlowInfo describes a flow connected to a plugin.
type FlowInfo struct {
	// Name is the flow's name; Stream its queue stream to the sink
	// ("flow.sink"), empty for a source.
	Name, Stream string
	// Urgent is the flow's expect.urgent: its records should go first.
	Urgent bool
}

// UrgentStreams returns the streams of the urgent flows among flows.
func UrgentStreams(flows []FlowInfo) map[string]bool {
	out := map[string]bool{}
	for _, f := range flows {
		if f.Urgent {
			out[f.Stream] = true
		}
	}
	return out
}

// StateStore is a plugin's small durable state, kept in the queue file.
type StateStore interface {
	// Get returns the value stored under name.
	Get(name string) ([]byte, bool, error)
	// Put stores value under name durably (fsync) before returning.
	Put(ctx context.Context, name string, value []byte) error
	// Delete removes name durably.
	Delete(ctx context.Context, name string) error
}

// SourceFactory builds sources of one type.
type SourceFactory struct {
	// Type is the name used as "type:" in the config.
	Type string
	// NewConfig returns a pointer to a config struct with defaults set.
	NewConfig func() any
	// New validates cfg and builds the source; it must not do network I/O.
	New func(cfg any, env Env) (Source, error)
}

// SinkFactory builds sinks of one type.
type SinkFactory struct {
	Type      string
	NewConfig func() any
	New       func(cfg any, env Env) (Sink, error)
}

// StateWrite sets (or with Delete removes) one named value of a source's
// durable state.
type StateWrite struct {
	Name   string
	Value  []byte
	Delete bool
}

// StateEmitter is implemented by the engine's emitters. A source whose
// progress must match its records exactly (a file offset, an OPC UA
// counter's last value) writes that progress in the same transaction as the
// records, so after a crash both are there or neither is. The state is
// read back through Env.State.
type StateEmitter interface {
	Emitter
	EmitWithState(ctx context.Context, states []StateWrite, msgs ...Message) error
}

// Batcher is implemented by sinks that deliver in large batches closed by
// size, age or schedule (DMF packages). Before each Write the runner asks
// Flush whether a batch of n records, the oldest received at oldest, should
// be written now; if not, it keeps gathering records (up to the sink's
// max_batch) and asks again after wait, or when more records arrive. Flush
// is not asked once max_batch records are waiting. A stopping gateway does
// not flush partial batches: their records stay queued for the next start.
type Batcher interface {
	Flush(n int, oldest, now time.Time) (flush bool, wait time.Duration)
}

// Redecoder is implemented by sources that can decode a message's raw bytes
// again. The gateway uses it to send replayed dead letters of a source
// (messages that could not be decoded, mapped or matched) through the flows
// once more, after the config was fixed. Sources without it are decoded as
// JSON.
type Redecoder interface {
	Redecode(raw []byte, meta map[string]any) (payload any, err error)
}
