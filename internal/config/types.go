package config

import (
	"strings"
	"time"

	"github.com/plantgate/plantgate/internal/logging"
)

// Config is a whole plantgate configuration after decoding, defaulting,
// secret resolution and validation. Maps are keyed by the instance names used
// in the file; their order in the file is kept in the matching *Order slices.
type Config struct {
	// File is the path the config was read from.
	File string `yaml:"-"`
	// Checksum is the SHA-256 of the file's bytes, hex encoded; reload skips
	// an unchanged checksum.
	Checksum string `yaml:"-"`

	Gateway Gateway            `yaml:"gateway"`
	Log     Log                `yaml:"log"`
	HTTP    HTTP               `yaml:"http"`
	FO      map[string]*FOEnv  `yaml:"fo"`
	Sources map[string]*Plugin `yaml:"sources"`
	Sinks   map[string]*Plugin `yaml:"sinks"`
	Flows   map[string]*Flow   `yaml:"flows"`

	SourceOrder []string `yaml:"-"`
	SinkOrder   []string `yaml:"-"`
	FlowOrder   []string `yaml:"-"`
	FOOrder     []string `yaml:"-"`

	// Warnings are problems that do not stop the gateway (for example a
	// literal secret in the file); check-config prints them.
	Warnings []Problem `yaml:"-"`

	// positions maps field paths to where they are written.
	positions map[string]Pos
}

// FieldPos returns where the field at path (such as "http.listen" or
// "sinks.mes.env") is written; for a field left at its default, where its
// nearest parent is written (or the file's first line). The gateway names
// it when it refuses a value at start.
func (c *Config) FieldPos(path string) Pos {
	for p := path; p != ""; {
		if pos, ok := c.positions[p]; ok {
			pos.Path = path
			return pos
		}
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return Pos{File: c.File, Line: 1, Column: 1, Path: path}
}

// Gateway holds gateway-wide settings.
type Gateway struct {
	// ID names this gateway in status output and metrics. Required.
	ID string `yaml:"id" required:"true"`
	// DataDir holds the queue file (queue.db). Default /var/lib/plantgate.
	DataDir string `yaml:"data_dir" default:"/var/lib/plantgate" file:"dir"`
	// DrainTimeout bounds how long a stopping sink may finish its batch.
	DrainTimeout Duration `yaml:"drain_timeout" default:"10s"`
	// Queue configures the durable queue.
	Queue Queue `yaml:"queue"`
}

// Queue configures the bbolt queue.
type Queue struct {
	// MaxBytes is the quota of the queue file: everything in use in it
	// (pending records, dead letters, idempotency keys, state), measured
	// after every commit. When reached, sources stop acknowledging.
	// Default 2GiB.
	MaxBytes Size `yaml:"max_bytes" default:"2GiB"`
	// DeadMaxBytes caps the dead letters; when reached, sources stop
	// acknowledging as for a full queue (status and plantgate_queue_full
	// say why) until dead letters are replayed or purged. 0: dead letters
	// may use all of max_bytes.
	DeadMaxBytes Size `yaml:"dead_max_bytes" default:"512MiB"`
	// DeadRetention removes dead letters older than this, logging how many
	// (never held ones). 0 keeps them until replayed or purged.
	DeadRetention Duration `yaml:"dead_retention" default:"0s"`
	// StreamMaxBytes is the quota of a single stream; 0 means only MaxBytes applies.
	StreamMaxBytes Size `yaml:"stream_max_bytes" default:"0"`
	// OnFull is what an append does when a quota is reached: "block" (wait
	// for space, so sources stop acknowledging upstream) or "reject" (the
	// append fails at once with queue.ErrFull and the source must not ack).
	OnFull string `yaml:"on_full" default:"block" enum:"block,reject"`
	// MaxRecordBytes rejects a single record larger than this.
	MaxRecordBytes Size `yaml:"max_record_bytes" default:"1MiB"`
	// DedupWindow is how long an idempotency key is remembered.
	DedupWindow Duration `yaml:"dedup_window" default:"24h"`
	// LeaseTimeout returns a leased record to its stream if the sink neither
	// acks nor nacks it within this time.
	LeaseTimeout Duration `yaml:"lease_timeout" default:"2m"`
	// CommitMaxRecords and CommitMaxDelay bound a group commit. With a zero
	// delay a commit takes whatever arrived while the previous fsync ran.
	CommitMaxRecords int      `yaml:"commit_max_records" default:"1000"`
	CommitMaxDelay   Duration `yaml:"commit_max_delay" default:"0s"`
	// CompactMinBytes: a drained queue file larger than this is compacted at startup.
	CompactMinBytes Size `yaml:"compact_min_bytes" default:"256MiB"`
}

// Log configures the root logger.
type Log struct {
	Level  string `yaml:"level" default:"info" enum:"trace,debug,info,warn,error"`
	Format string `yaml:"format" default:"auto" enum:"auto,json,console"`
}

// HTTP configures the health, metrics, status and admin endpoints.
type HTTP struct {
	// Listen is host:port; empty disables the HTTP server.
	Listen string `yaml:"listen" default:"127.0.0.1:9464" listen:"true"`
	// AdminToken guards /api/v1/admin/* and the page's actions. Without it
	// the admin API is off.
	AdminToken logging.Secret `yaml:"admin_token"`
	// ReadToken, when set, guards the status page, /api/v1/status and
	// /metrics (the admin token is accepted there too); /healthz and
	// /readyz stay open for probes.
	ReadToken logging.Secret `yaml:"read_token"`
	// TLS, when set, serves HTTPS with this certificate and key.
	TLS *HTTPTLS `yaml:"tls"`
	// AuditLog is the file operator actions are appended to (default
	// <data_dir>/audit.log).
	AuditLog string `yaml:"audit_log" file:"write"`
}

// HTTPTLS is the certificate of the HTTP listener.
type HTTPTLS struct {
	CertFile string `yaml:"cert_file" required:"true" file:"cert"`
	KeyFile  string `yaml:"key_file" required:"true" file:"key"`
}

// FOEnv is one Dynamics 365 F&O environment and the app registration used
// to reach it.
type FOEnv struct {
	// URL is the environment URL, e.g. https://contoso.operations.dynamics.com.
	URL      string `yaml:"url" required:"true"`
	TenantID string `yaml:"tenant_id" required:"true"`
	ClientID string `yaml:"client_id" required:"true"`
	// ClientSecret, or CertificateFile plus PrivateKeyFile.
	ClientSecret    logging.Secret `yaml:"client_secret"`
	CertificateFile string         `yaml:"certificate_file" file:"cert"`
	PrivateKeyFile  string         `yaml:"private_key_file" file:"key"`
	// AuthorityURL is the identity platform; the emulator's URL in tests.
	AuthorityURL string `yaml:"authority_url" default:"https://login.microsoftonline.com"`
	// Company is the default dataAreaId.
	Company string `yaml:"company"`
	// CAFile adds a CA to trust (an emulator or a TLS-inspecting proxy).
	CAFile string `yaml:"ca_file" file:"ca"`
	// Timeout bounds one HTTP request.
	Timeout Duration `yaml:"timeout" default:"30s"`
	// MaxRequestsPerSecond is the ceiling of the adaptive limiter.
	MaxRequestsPerSecond float64 `yaml:"max_requests_per_second" default:"20"`
	// MaxConcurrent bounds requests in flight to this environment.
	MaxConcurrent int `yaml:"max_concurrent" default:"8"`

	Pos Pos `yaml:"-"`
}

// Plugin is a source or sink instance. Type selects the plugin; the other
// keys beside it are decoded into Settings, the plugin's own config struct
// (obtained from Options.SourceConfig / SinkConfig with defaults set).
type Plugin struct {
	Type string `yaml:"type" required:"true"`
	// Startup is what happens when the plugin cannot connect at start:
	// error (exit), retry (report not ready and back off) or probe.
	Startup string `yaml:"startup" default:"retry" enum:"error,retry,probe"`

	// Sink runner settings; ignored for sources (and rejected there).
	Runner SinkRunner `yaml:"-"`
	// Source settings the engine handles; rejected on sinks.
	Source SourceOptions `yaml:"-"`

	// Settings is the plugin's own decoded config struct (a pointer).
	Settings any `yaml:"-"`
	Pos      Pos `yaml:"-"`
}

// SourceOptions holds the keys every source accepts, handled by the flow
// engine rather than the plugin.
type SourceOptions struct {
	// Unmatched is what happens to a message no flow's "when" selects:
	// count (plantgate_source_unmatched_total) or dead_letter (kept in the
	// source's dead letters with its raw bytes, for replay after a fix).
	Unmatched string `yaml:"unmatched" default:"count" enum:"count,dead_letter"`
}

// SinkRunner holds the keys every sink accepts, handled by the flow engine
// rather than the plugin.
type SinkRunner struct {
	// MaxBatch is the most records one Write receives.
	MaxBatch int `yaml:"max_batch" default:"100"`
	// Parallelism is how many keys are written concurrently. Order per key
	// is kept whatever the value.
	Parallelism int `yaml:"parallelism" default:"4"`
	// Retry is the backoff for transient failures.
	Retry Retry `yaml:"retry"`
}

// Retry is a capped exponential backoff with full jitter.
type Retry struct {
	Initial Duration `yaml:"initial" default:"500ms"`
	Max     Duration `yaml:"max" default:"5m"`
}

// Flow routes records from a source, filtered by When, keyed by Key and shaped
// by Map, to one or more sinks. Each (flow, sink) pair is its own queue stream.
type Flow struct {
	From string `yaml:"from" required:"true"`
	// When is an expr-lang boolean expression; empty matches everything.
	When Expr `yaml:"when"`
	// Key is an expression giving the order key (usually the production order).
	Key Expr `yaml:"key"`
	// ID is an expression giving the idempotency key; records with an ID
	// already seen within the queue's dedup window are dropped as duplicates.
	ID Expr `yaml:"id"`
	// Map is field name -> expression, in file order. Empty passes the
	// decoded payload through as the record's fields.
	Map []MapField `yaml:"-"`
	// To lists sink names (a single string or a list in the file).
	To []string `yaml:"-"`
	// Expect declares rate and urgency, checked against the sink's pattern.
	Expect Expect `yaml:"expect"`
	// AcceptDuplicates says that the flow may deliver a message twice:
	// without an ID, a source that redelivers (MQTT) feeding a sink that
	// cannot recognise a copy (fo.mes, fo.odata create without key) makes
	// check-config fail unless this is true.
	AcceptDuplicates bool `yaml:"accept_duplicates"`
	// Overflow sends the flow's new records to a fo.dmf sink instead of its
	// fo.odata sink while that sink's stream is under pressure.
	Overflow Overflow `yaml:"overflow"`

	Pos Pos `yaml:"-"`
	// ToPos is the position of the "to" value.
	ToPos Pos `yaml:"-"`
}

// Overflow lets an entity flow switch to DMF under pressure: while its
// fo.odata stream holds Backlog records or more, or has been throttled by
// F&O for Throttled, records of keys with nothing pending in that stream
// go to Sink (a fo.dmf sink) instead, and come back once the pressure ends
// and the key has nothing pending in DMF: a key never has records in both
// paths at once, so its order holds.
type Overflow struct {
	Sink      string   `yaml:"sink" ref:"sink"`
	Backlog   int      `yaml:"backlog" default:"1000" min:"1"`
	Throttled Duration `yaml:"throttled" default:"30s"`
}

// MapField is one entry of a flow's map.
type MapField struct {
	Name string
	Expr Expr
}

// Expect is a flow's declared shape.
type Expect struct {
	// Rate like "0.2/s", "40/s", "100/m".
	Rate   string `yaml:"rate"`
	Urgent bool   `yaml:"urgent"`
}

// Expr is an expression's source text and where it was written, so compile
// errors can name file:line:column.
type Expr struct {
	Src string
	Pos Pos
}

// Pos is a location in a config file; Path is the field path such as
// "flows.report-finished.map.Quantity".
type Pos struct {
	File   string
	Line   int
	Column int
	Path   string
}

// Duration is a time.Duration that decodes from "15m", "1h30m", "500ms" or
// "2d" (days).
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Size is a byte count that decodes from "2GiB", "512MB", "64KiB" or an integer.
type Size int64
