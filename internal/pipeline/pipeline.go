package pipeline

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Message is what a source hands to the flow engine: one upstream message
// (an MQTT publish, a line of a file).
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
	// (for MQTT: topic, qos, retained, received_at).
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
	// Flow is the flow that mapped the record.
	Flow string
	// Time is when the source received the message.
	Time time.Time
	// Fields are the mapped fields, ready for the sink.
	Fields map[string]any
	// Meta is the source metadata of the original message.
	Meta map[string]any
	// Raw is the source message's bytes: a dead letter keeps them, and a
	// replay maps them again through the flow's current config.
	Raw []byte
	// Attempts counts previous delivery attempts in this process.
	Attempts int
	// Appended is when the queue stored the record (set by the queue).
	Appended time.Time
	// Remap is set on a record an operator replayed from the dead letters:
	// the runner maps it again from Raw through its flow's current config
	// before delivering it.
	Remap bool
}

// Emitter receives messages from a source.
type Emitter interface {
	// Emit routes msgs through the source's flows and appends the results
	// to the queue. It returns only after an fsync'd commit (or after the
	// messages were durably dead-lettered or recognised as duplicates);
	// only then may the source acknowledge upstream. An error means nothing
	// may be acknowledged; the source should retry or let the upstream
	// redeliver. Emit blocks while the queue is full and on_full is block.
	// Emit is safe for concurrent use, and keeps no reference to the msgs
	// slice after it returns (the mqtt source fills it again).
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
	Metrics prometheus.Registerer
	// Now is the clock; tests may replace it.
	Now func() time.Time
	// State is the plugin's durable named state in the queue file; nil
	// where no queue is open (check-config).
	State StateStore
	// Records is the queue's per-record bookkeeping (marks, holds) for
	// sinks; nil where no queue is open.
	Records RecordStore
	// DataDir is a directory of the plugin's own under the gateway's data
	// dir, for files too large for the queue (a DMF package being built);
	// empty where no queue is open.
	DataDir string
	// GatewayID is the gateway's gateway.id.
	GatewayID string
	// Flows are the flows connected to the plugin: for a sink those that
	// route to it, for a source those that read from it.
	Flows []FlowInfo
	// Resolve gives access to shared gateway objects (an F&O environment's
	// client and limiter, kind "fo"; another sink, kind "sink") by name;
	// nil when none.
	Resolve func(kind, name string) (any, error)
	// Settle settles a record held in doubt in stream while the gateway
	// runs, with the stream's delivery paused meanwhile: delivered true
	// means F&O has it (the hold and the record go; records parked behind
	// it are delivered), false makes it a dead letter with reason, no
	// longer held (replayable). A record no longer held is left alone.
	// nil where no gateway runs.
	Settle func(ctx context.Context, stream string, seq uint64, delivered bool, reason string) error
}

// FlowInfo describes a flow connected to a plugin.
type FlowInfo struct {
	// Name is the flow's name; Stream its queue stream to the sink
	// ("flow.sink"), empty for a source.
	Name, Stream string
	// Urgent is the flow's expect.urgent: its records should go first.
	Urgent bool
	// Fields are the record fields the flow maps (empty: the payload is
	// passed as it is); set for CheckFlow.
	Fields []string
}

// UrgentFlows returns the names of the urgent flows among flows.
func UrgentFlows(flows []FlowInfo) map[string]bool {
	out := map[string]bool{}
	for _, f := range flows {
		if f.Urgent {
			out[f.Name] = true
		}
	}
	return out
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
	// Redelivers reports whether a source with settings cfg (as returned
	// by NewConfig and decoded) may emit the same upstream message more
	// than once: at-least-once delivery, where a lost or late
	// acknowledgement makes the upstream send the message again (MQTT). A
	// source that commits its progress with its records (StateEmitter), so
	// that a message is either committed with its progress or not at all,
	// does not redeliver. nil means the source never emits a message twice.
	// check-config requires an id (or accept_duplicates) on a flow from a
	// redelivering source to a sink that does not de-duplicate.
	Redelivers func(cfg any) bool
}

// SinkFactory builds sinks of one type.
type SinkFactory struct {
	Type      string
	NewConfig func() any
	New       func(cfg any, env Env) (Sink, error)
	// Dedups reports whether a sink with settings cfg writes so that a
	// record delivered twice (the same message redelivered by its source,
	// as a second queue record) leaves a single result at the peer: an
	// update or upsert by a business key, for example. It returns false
	// for a sink whose peer keeps both copies (a create without a key, a
	// MES message). nil means duplicates are no concern for the sink (it
	// writes to no system of record) and it is not checked.
	Dedups func(cfg any) bool
	// SharedStream makes all flows to one sink of this type append to one
	// queue stream (named after the sink) instead of one stream per flow,
	// so records of one key keep their order across flows: F&O's message
	// processor handles one production order's messages in the order they
	// arrive, whatever their message type.
	SharedStream bool
	// CheckFlow, if set, checks a flow routing to a sink with settings cfg
	// (for example that it maps a field the sink needs); check-config
	// reports its error at the flow.
	CheckFlow func(cfg any, flow FlowInfo) error
	// OrderScope, if set, names what a sink with settings cfg keeps order
	// across (for fo.mes: the F&O environment and company). check-config
	// warns when two sinks of the type share a scope, since order per key
	// holds within one sink only.
	OrderScope func(cfg any) string
}

// StateWrite sets (or with Delete removes) one named value of a source's
// durable state.
type StateWrite struct {
	Name   string
	Value  []byte
	Delete bool
}

// StateEmitter is implemented by the engine's emitters. A source whose
// progress must match its records exactly (a file offset) writes that
// progress in the same transaction as the records, so after a crash both
// are there or neither is. The state is read back through Env.State.
type StateEmitter interface {
	Emitter
	EmitWithState(ctx context.Context, states []StateWrite, msgs ...Message) error
}

// Redecoder is implemented by sources that can decode a message's raw bytes
// again. The gateway uses it to send replayed dead letters of a source
// (messages that could not be decoded, mapped or matched) through the flows
// once more, after the config was fixed. Sources without it are decoded as
// JSON.
type Redecoder interface {
	Redecode(raw []byte, meta map[string]any) (payload any, err error)
}

// Hold is a record set aside for an operator by a sink's in-doubt policy.
// The queue keeps holds beside the records of their stream, keyed by the
// record's sequence (never reused within a queue file), so a purge or a
// release removes them in the same transaction as the records.
type Hold struct {
	// Seq is the record's sequence in its stream when it was set aside.
	Seq uint64 `json:"seq"`
	Key string `json:"key,omitempty"`
	// State is HoldInDoubt or HoldParked.
	State string `json:"state"`
	// Behind is, for a parked record, the Seq of the held record it waits for.
	Behind uint64    `json:"behind,omitempty"`
	Since  time.Time `json:"since"`
	// Reason is why the record is in doubt (the error of the last attempt).
	Reason string `json:"reason,omitempty"`
	// Target says what the record was for (message type, entity set).
	Target string `json:"target,omitempty"`
	// Sink is the sink that set the record aside.
	Sink string `json:"sink,omitempty"`
}

// Hold states.
const (
	// HoldInDoubt: the record was sent and its outcome is unknown; it waits
	// for an operator (release or drop). It holds back its key's later
	// records in its stream.
	HoldInDoubt = "held"
	// HoldParked: a later record of the same key, set aside so the key's
	// order is kept; released or freed together with its holder.
	HoldParked = "parked"
)

// RecordState is what the queue keeps beside one queued record.
type RecordState struct {
	// Mark is the record's mark (a sink's in-flight marker), nil if none.
	// A mark lives as long as the record: the queue deletes it in the
	// transaction that acks, dead-letters or purges the record.
	Mark []byte
	// Hold is the record's own hold, if it was set aside.
	Hold *Hold
	// KeyHolder is the in-doubt hold that holds back the record's key in
	// its stream, if any (it may be the record itself).
	KeyHolder *Hold
}

// RecordStore is the part of the queue a sink uses for per-record
// bookkeeping: marks written before a request leaves, and holds.
type RecordStore interface {
	// RecordState reads the mark and holds of a record of stream.
	RecordState(stream string, seq uint64, key string) (RecordState, error)
	// SetMark durably sets (value nil: deletes) the mark of a queued
	// record; it fails if the record is not queued.
	SetMark(ctx context.Context, stream string, seq uint64, value []byte) error
	// PutHold durably sets a queued record aside.
	PutHold(ctx context.Context, stream string, h Hold) error
	// Holds lists the holds of stream, by sequence.
	Holds(stream string) ([]Hold, error)
}

// StreamSink is implemented by sinks that drive their streams themselves
// instead of being fed batches by a runner: a DMF sink closes a batch as a
// fixed range of the stream, keeps its multi-step progress (package,
// upload, import, polling) in its state, and acks or dead-letters the
// whole range when F&O has answered. The gateway calls RunStream once per
// stream of the sink, instead of starting a runner; Write is not called.
type StreamSink interface {
	Sink
	// RunStream delivers stream until ctx ends, then returns nil.
	RunStream(ctx context.Context, stream string, q StreamQueue) error
}

// StreamPauser is implemented by StreamSinks an operator can pause: while
// a stream is paused the sink starts no new delivery of it.
type StreamPauser interface {
	PauseStream(stream string, paused bool)
}

// StreamQueue is a stream of the queue as a StreamSink sees it.
type StreamQueue interface {
	// List returns up to limit records with a sequence above after, in
	// order (limit 0: all).
	List(after uint64, limit int) ([]Record, error)
	// Pending returns how many records wait, their bytes, and when the
	// oldest was appended (zero when none).
	Pending() (count, bytes int64, oldest time.Time)
	// Wait returns a channel closed the next time records are appended.
	Wait() <-chan struct{}
	// Ack deletes delivered records and writes the sink's states, in one
	// durable transaction.
	Ack(ctx context.Context, seqs []uint64, states ...StateWrite) error
	// DeadLetter moves records to the dead letters with their reasons and
	// writes the sink's states, in one durable transaction.
	DeadLetter(ctx context.Context, dead []DeadRecord, states ...StateWrite) error
	// Remap maps a replayed record (Record.Remap) again through its flow's
	// current config.
	Remap(r Record) (Record, error)
}

// DeadRecord names a record to dead-letter and why.
type DeadRecord struct {
	Seq    uint64
	Reason string
}

// BatchInfo is a batch a sink has closed and not settled yet, as status
// shows it.
type BatchInfo struct {
	Stream      string    `json:"stream"`
	ID          string    `json:"id"`
	Step        string    `json:"step"`
	Lines       int       `json:"lines"`
	Reason      string    `json:"reason"`
	ClosedAt    time.Time `json:"closed_at"`
	ExecutionID string    `json:"execution_id,omitempty"`
	// Status is F&O's last answer about the batch's import.
	Status    string `json:"status,omitempty"`
	Stalled   bool   `json:"stalled,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// BatchReporter is implemented by sinks that deliver in batches (fo.dmf).
type BatchReporter interface {
	Batches() []BatchInfo
}

// ConcernReporter is implemented by plugins that keep working under
// conditions someone should look at (MES messages F&O has not reported
// on): each concern makes a ready gateway degraded, under the plugin's
// name, in /readyz, the status and the page.
type ConcernReporter interface {
	Concerns() []string
}

// HTTPReceiver is implemented by sources that receive messages on the
// gateway's own HTTP listener (F&O's HTTPS business event endpoint). The
// gateway mounts each handler at /api/v1/events/<path> (any method); the
// handler authenticates its callers itself, and answers 2xx only once
// what it received is durably queued.
type HTTPReceiver interface {
	Routes() map[string]http.Handler
}
