package foemu

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"
)

// Default identity of an emulator started without a config file.
const (
	DefaultClientID     = "plantgate-demo"
	DefaultClientSecret = "demo-secret"
	DefaultListen       = "127.0.0.1:8443"
)

// AzuriteAccount and AzuriteKey are Azurite's well-known development
// storage account and key (public, documented by Microsoft).
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Duration is a time.Duration written as a Go duration string ("250ms",
// "1m30s") in YAML and JSON.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string, or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return fmt.Errorf("duration must be a string such as \"250ms\" or a number of seconds")
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: invalid duration %q (want e.g. 250ms, 2s, 1m)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// Config is the emulator configuration: the YAML config file, plus the
// command-line settings and in-process options (the fields without YAML
// names). Start from DefaultConfig and change what you need.
type Config struct {
	// Listen is the listen address of the command (flag --listen).
	Listen string `yaml:"listen" json:"listen"`
	// PublicURL overrides the base URL the emulator advertises (and the
	// token audience it expects). Empty means https://<listen address>, with
	// 127.0.0.1 for an unspecified address.
	PublicURL string `yaml:"public_url" json:"public_url,omitempty"`
	// HTTP serves plain HTTP instead of HTTPS (flag --http). MSAL refuses
	// plain HTTP authorities.
	HTTP bool `yaml:"http" json:"http"`
	// TLS configures the server certificate.
	TLS TLSConfig `yaml:"tls" json:"tls"`
	// Log configures the command's logger.
	Log LogConfig `yaml:"log" json:"log"`
	// Control configures the /_emulator endpoints.
	Control ControlConfig `yaml:"control" json:"control"`
	// Identity configures the identity platform (tenants, clients, tokens).
	Identity IdentityConfig `yaml:"identity" json:"identity"`
	// OData configures the /data service.
	OData ODataConfig `yaml:"odata" json:"odata"`
	// Throttling configures service protection (429 + Retry-After).
	Throttling ThrottleConfig `yaml:"throttling" json:"throttling"`
	// MES configures the message service and its processor.
	MES MESConfig `yaml:"mes" json:"mes"`
	// DMF configures the data package API and its blob store.
	DMF DMFConfig `yaml:"dmf" json:"dmf"`
	// Schema adds entities to (or replaces) the built-in schema.
	Schema SchemaConfig `yaml:"schema" json:"schema"`
	// SeedFile replaces the built-in seed data (companies, products,
	// production orders). Relative paths are relative to the config file.
	SeedFile string `yaml:"seed_file" json:"seed_file,omitempty"`
	// Faults are injected from the start (see Faults).
	Faults Faults `yaml:"faults" json:"faults"`
	// Events configures the business events the emulator sends (see
	// EventsConfig).
	Events EventsConfig `yaml:"events" json:"events"`
	// Snapshot saves the state to DATA-DIR/state.json on shutdown and
	// restores it on start.
	Snapshot bool `yaml:"snapshot" json:"snapshot"`

	// DataDir holds the generated CA and server certificate and the
	// snapshot (flag --data-dir). Required.
	DataDir string `yaml:"-" json:"data_dir"`
	// File is the config file the configuration came from, if any.
	File string `yaml:"-" json:"file,omitempty"`
	// Logger receives the emulator's logs; nil discards them.
	Logger *zerolog.Logger `yaml:"-" json:"-"`

	schema *Schema
	seed   *Seed
	doc    *yamlDoc
}

// TLSConfig configures the HTTPS certificate.
type TLSConfig struct {
	// CertFile and KeyFile name a PEM certificate and key (flags --cert and
	// --key). Empty means a CA and server certificate generated on first
	// start and kept in the data directory.
	CertFile string `yaml:"cert_file" json:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file" json:"key_file,omitempty"` // key of CertFile
	// Hosts are extra DNS names or IP addresses for the generated server
	// certificate, beyond 127.0.0.1, ::1 and localhost.
	Hosts []string `yaml:"hosts" json:"hosts,omitempty"`
}

// LogConfig configures the command's logger.
type LogConfig struct {
	Level  string `yaml:"level" json:"level"`   // trace, debug, info, warn or error
	Format string `yaml:"format" json:"format"` // auto, json or console
}

// ControlConfig configures the /_emulator inspection and fault endpoints.
type ControlConfig struct {
	// Token, if set, must be sent as "Authorization: Bearer <token>" to
	// every /_emulator endpoint. Empty means no authentication.
	Token string `yaml:"token" json:"-"`
}

// IdentityConfig configures the identity platform.
type IdentityConfig struct {
	// TenantID, if set, is the only tenant accepted (others get
	// AADSTS90002). Empty accepts any tenant.
	TenantID string `yaml:"tenant_id" json:"tenant_id,omitempty"`
	// TokenLifetime is the access token lifetime (expires_in). Default 1h,
	// which gives expires_in 3599 like Microsoft Entra ID.
	TokenLifetime Duration `yaml:"token_lifetime" json:"token_lifetime"`
	// Clients are the registered applications. Empty means the single
	// client plantgate-demo with secret demo-secret.
	Clients []ClientConfig `yaml:"clients" json:"clients"`
}

// ClientConfig is one application registered in both Entra ID and F&O.
type ClientConfig struct {
	// ClientID is the application (client) ID.
	ClientID string `yaml:"client_id" json:"client_id"`
	// Name is a display name.
	Name string `yaml:"name" json:"name,omitempty"`
	// Secrets are the valid client secrets. A client with none only
	// accepts certificate assertions.
	Secrets []string `yaml:"secrets" json:"-"`
	// Secret is a shorthand for a single secret.
	Secret string `yaml:"secret" json:"-"`
	// DefaultCompany is the default company of the F&O user the client maps
	// to; reads without cross-company=true see only this company. Empty
	// means the seed's default company.
	DefaultCompany string `yaml:"default_company" json:"default_company,omitempty"`
	// Priority is the throttling priority: Low, Medium (default) or High.
	Priority string `yaml:"priority" json:"priority,omitempty"`
	// AllowAssertion accepts client_assertion (certificate) credentials,
	// whose signature the emulator does not check. Default true.
	AllowAssertion *bool `yaml:"allow_assertion" json:"allow_assertion,omitempty"`
}

// ODataConfig configures the /data service.
type ODataConfig struct {
	// PageSize is the server-driven page size (default 10000, as F&O).
	PageSize int `yaml:"page_size" json:"page_size"`
	// MaxBatchOperations bounds the operations in one $batch (default 5000).
	MaxBatchOperations int `yaml:"max_batch_operations" json:"max_batch_operations"`
	// WriteErrorStatus is the status of a failed single write (default 400).
	WriteErrorStatus int `yaml:"write_error_status" json:"write_error_status"`
	// BatchWriteErrorStatus is the status of a failed write inside $batch
	// (default 500, as observed on F&O).
	BatchWriteErrorStatus int `yaml:"batch_write_error_status" json:"batch_write_error_status"`
}

// ThrottleConfig configures per-client service protection: a token bucket
// of RequestsPerSecond refilled up to Burst, and a cap on concurrent
// requests. The defaults approximate F&O's user-based limits (6,000
// requests per 300 s, 52 concurrent).
type ThrottleConfig struct {
	// Enabled turns throttling on (default true).
	Enabled *bool `yaml:"enabled" json:"enabled,omitempty"`
	// RequestsPerSecond is the refill rate (default 20).
	RequestsPerSecond float64 `yaml:"requests_per_second" json:"requests_per_second,omitempty"`
	// Burst is the bucket size (default 6000).
	Burst float64 `yaml:"burst" json:"burst,omitempty"`
	// Concurrent caps in-flight requests per client (default 52; 0 keeps
	// the default, negative means no cap).
	Concurrent int `yaml:"concurrent" json:"concurrent,omitempty"`
	// Penalty is the debt, in requests, that each throttled request adds,
	// so that clients which keep sending see Retry-After grow (default 1).
	Penalty float64 `yaml:"penalty" json:"penalty,omitempty"`
	// PriorityFactors scale rate, burst and concurrency per priority
	// (default Low 0.5, Medium 1, High 2).
	PriorityFactors map[string]float64 `yaml:"priority_factors" json:"priority_factors,omitempty"`
	// Clients override the budget per client ID.
	Clients map[string]ThrottleConfig `yaml:"clients" json:"clients,omitempty"`
}

// MESConfig configures the MES message service.
type MESConfig struct {
	// ProcessingDelay is how long a message waits in Queued before the
	// processor picks it up (default 500ms).
	ProcessingDelay Duration `yaml:"processing_delay" json:"processing_delay"`
	// RetryDelay is the wait between attempts (default 200ms).
	RetryDelay Duration `yaml:"retry_delay" json:"retry_delay"`
	// Attempts is the number of tries before Failed (default 3, as F&O).
	Attempts int `yaml:"attempts" json:"attempts"`
	// Workers is the number of production orders processed in parallel
	// (default 4; F&O allows up to 8 processor tasks).
	Workers int `yaml:"workers" json:"workers"`
	// ValidateOnSend rejects bad message content (unknown fields, missing
	// mandatory fields, wrong types) at SendMessage. When false, such
	// messages are accepted and fail in the processor. Default true.
	ValidateOnSend *bool `yaml:"validate_on_send" json:"validate_on_send,omitempty"`
	// RejectStatus is the HTTP status of a rejected SendMessage (default 400).
	RejectStatus int `yaml:"reject_status" json:"reject_status"`
}

// DMFConfig configures the data package API.
type DMFConfig struct {
	// Blob selects the blob store that holds packages.
	Blob BlobConfig `yaml:"blob" json:"blob"`
	// SASLifetime is the validity of the SAS URLs the emulator issues
	// (default 35m). F&O does not document its window; a GetAzureWriteUrl
	// URL seen in a bug report ran from st to se 35 minutes. An expired
	// upload URL is refused by the blob endpoint (Azurite checks it itself),
	// and an expired packageUrl fails ImportFromPackage.
	SASLifetime Duration `yaml:"sas_lifetime" json:"sas_lifetime"`
	// NotFoundWindow is how long after ImportFromPackage the calls naming
	// the execution (GetExecutionSummaryStatus, GetExecutionErrors, the
	// error file actions, GetExecutionSummaryPageUrl) answer 400 "... were
	// not found", before the batch job has created the execution (default
	// 1s; 0 disables).
	NotFoundWindow Duration `yaml:"not_found_window" json:"not_found_window"`
	// QueuedTime is how long an execution stays NotRun (default 1s).
	QueuedTime Duration `yaml:"queued_time" json:"queued_time"`
	// ExecutionTime is how long it stays Executing (default 2s).
	ExecutionTime Duration `yaml:"execution_time" json:"execution_time"`
	// ErrorFileDelay is how long GetImportTargetErrorKeysFileUrl answers ""
	// after GenerateImportTargetErrorKeysFile (default 500ms).
	ErrorFileDelay Duration `yaml:"error_file_delay" json:"error_file_delay"`
	// ReusedExecutionID decides what ImportFromPackage does with an
	// executionId it already knows: idempotent (default; return it and do
	// not import again), reimport (import the package again under the same
	// id) or reject (answer 400).
	ReusedExecutionID string `yaml:"reused_execution_id" json:"reused_execution_id"`
	// ParallelImports decides what happens to an ImportFromPackage that
	// arrives while another execution (of any client) is still NotRun or
	// Executing: fail (default; F&O documents that ImportFromPackage must
	// not be called from parallel threads, and simultaneous imports were
	// reported to fail with duplicate keys) accepts it and returns its
	// executionId, then ends it Failed with a duplicate-key error in
	// staging, importing nothing; allow runs it normally.
	ParallelImports string `yaml:"parallel_imports" json:"parallel_imports"`
	// MissingEntityMap decides what an entity without EntityMapList does:
	// fail (default) or succeed_empty (Succeeded with 0 records, which is
	// what F&O has been reported to do).
	MissingEntityMap string `yaml:"missing_entity_map" json:"missing_entity_map"`
	// MaxPackageBytes bounds a package download (default 1 GiB).
	MaxPackageBytes int64 `yaml:"max_package_bytes" json:"max_package_bytes"`
}

// DefaultSASLifetime is the default dmf.sas_lifetime: F&O's SAS URLs have
// been seen to expire after 35 minutes (the window is not documented).
const DefaultSASLifetime = 35 * time.Minute

// dmf.parallel_imports values.
const (
	ParallelFail  = "fail"
	ParallelAllow = "allow"
)

// Blob store modes.
const (
	BlobBuiltin = "builtin"
	BlobAzurite = "azurite"
)

// BlobConfig selects where DMF packages and error files live.
type BlobConfig struct {
	// Mode is builtin (default: a small blob endpoint under /_blob/ on the
	// emulator itself) or azurite (a real Azurite or Azure Storage account).
	Mode string `yaml:"mode" json:"mode"`
	// Endpoint is the path-style account URL for azurite mode, e.g.
	// http://127.0.0.1:10000/devstoreaccount1.
	Endpoint string `yaml:"endpoint" json:"endpoint,omitempty"`
	// Account and Key are the storage account credentials (default: the
	// Azurite well-known account and key).
	Account string `yaml:"account" json:"account,omitempty"`
	Key     string `yaml:"key" json:"-"` // base64 account key; never shown by /_emulator/config
	// Container holds the packages (default dmf).
	Container string `yaml:"container" json:"container"`
}

// SchemaConfig extends the built-in schema.
type SchemaConfig struct {
	// Files are schema YAML files, merged in order; an entity with the same
	// set name replaces the earlier one. Relative paths are relative to the
	// config file.
	Files []string `yaml:"files" json:"files,omitempty"`
	// ReplaceBuiltin drops the built-in entities.
	ReplaceBuiltin bool `yaml:"replace_builtin" json:"replace_builtin,omitempty"`
}

// DefaultConfig returns the configuration of an emulator started without a
// config file. A config file is decoded on top of it, so that a setting the
// file leaves out keeps its default and an explicit 0 (for example
// not_found_window: 0s) stays 0. The caller must set DataDir.
func DefaultConfig() Config {
	c := Config{Listen: DefaultListen}
	c.MES.ProcessingDelay = Duration(500 * time.Millisecond)
	c.MES.RetryDelay = Duration(200 * time.Millisecond)
	c.DMF.NotFoundWindow = Duration(time.Second)
	c.DMF.QueuedTime = Duration(time.Second)
	c.DMF.ExecutionTime = Duration(2 * time.Second)
	c.DMF.ErrorFileDelay = Duration(500 * time.Millisecond)
	c.applyDefaults()
	return c
}

// applyDefaults fills the settings whose zero value is meaningless.
func (c *Config) applyDefaults() {
	if c.Identity.TokenLifetime == 0 {
		c.Identity.TokenLifetime = Duration(time.Hour)
	}
	if len(c.Identity.Clients) == 0 {
		c.Identity.Clients = []ClientConfig{{ClientID: DefaultClientID, Name: "plantgate demo", Secret: DefaultClientSecret}}
	}
	for i := range c.Identity.Clients {
		cl := &c.Identity.Clients[i]
		if cl.Secret != "" {
			cl.Secrets = append([]string{cl.Secret}, cl.Secrets...)
			cl.Secret = ""
		}
		if cl.Priority == "" {
			cl.Priority = "Medium"
		}
		if cl.AllowAssertion == nil {
			t := true
			cl.AllowAssertion = &t
		}
	}
	o := &c.OData
	if o.PageSize == 0 {
		o.PageSize = 10000
	}
	if o.MaxBatchOperations == 0 {
		o.MaxBatchOperations = 5000
	}
	if o.WriteErrorStatus == 0 {
		o.WriteErrorStatus = 400
	}
	if o.BatchWriteErrorStatus == 0 {
		o.BatchWriteErrorStatus = 500
	}
	c.Throttling.applyDefaults()
	c.Events.applyDefaults()
	m := &c.MES
	if m.Attempts == 0 {
		m.Attempts = 3
	}
	if m.Workers == 0 {
		m.Workers = 4
	}
	if m.ValidateOnSend == nil {
		t := true
		m.ValidateOnSend = &t
	}
	if m.RejectStatus == 0 {
		m.RejectStatus = 400
	}
	d := &c.DMF
	if d.Blob.Mode == "" {
		d.Blob.Mode = BlobBuiltin
	}
	if d.Blob.Account == "" {
		d.Blob.Account = AzuriteAccount
	}
	if d.Blob.Key == "" {
		d.Blob.Key = AzuriteKey
	}
	if d.Blob.Container == "" {
		d.Blob.Container = "dmf"
	}
	if d.SASLifetime == 0 {
		d.SASLifetime = Duration(DefaultSASLifetime)
	}
	if d.ParallelImports == "" {
		d.ParallelImports = ParallelFail
	}
	if d.ReusedExecutionID == "" {
		d.ReusedExecutionID = "idempotent"
	}
	if d.MissingEntityMap == "" {
		d.MissingEntityMap = "fail"
	}
	if d.MaxPackageBytes == 0 {
		d.MaxPackageBytes = 1 << 30
	}
}

func (t *ThrottleConfig) applyDefaults() {
	if t.Enabled == nil {
		v := true
		t.Enabled = &v
	}
	if t.RequestsPerSecond == 0 {
		t.RequestsPerSecond = 20
	}
	if t.Burst == 0 {
		t.Burst = 6000
	}
	if t.Concurrent == 0 {
		t.Concurrent = 52
	}
	if t.Penalty == 0 {
		t.Penalty = 1
	}
	if t.PriorityFactors == nil {
		t.PriorityFactors = map[string]float64{"low": 0.5, "medium": 1, "high": 2}
	}
}

// LoadConfig reads a YAML config file. Relative file names inside it are
// resolved against its directory. Errors wrap ErrConfig and start with
// file:line.
func LoadConfig(file string) (Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	c := DefaultConfig()
	doc, err := decodeYAML(file, data, &c)
	if err != nil {
		return Config{}, err
	}
	c.File = file
	c.doc = doc
	dir := filepath.Dir(file)
	rel := func(s string) string {
		if s == "" || filepath.IsAbs(s) {
			return s
		}
		return filepath.Join(dir, s)
	}
	c.TLS.CertFile, c.TLS.KeyFile, c.SeedFile = rel(c.TLS.CertFile), rel(c.TLS.KeyFile), rel(c.SeedFile)
	for i := range c.Schema.Files {
		c.Schema.Files[i] = rel(c.Schema.Files[i])
	}
	if err := c.prepare(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// prepare fills defaults, loads the schema and seed, and validates.
func (c *Config) prepare() error {
	c.applyDefaults()
	d := c.doc
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return d.errorf(p("tls"), "cert_file and key_file must be set together")
	}
	if c.PublicURL != "" && !strings.HasPrefix(c.PublicURL, "http://") && !strings.HasPrefix(c.PublicURL, "https://") {
		return d.errorf(p("public_url"), "public_url must start with http:// or https://")
	}
	seen := map[string]bool{}
	for i, cl := range c.Identity.Clients {
		if cl.ClientID == "" {
			return d.errorf(p("identity", "clients", i), "client without client_id")
		}
		if seen[strings.ToLower(cl.ClientID)] {
			return d.errorf(p("identity", "clients", i, "client_id"), "client %s defined twice", cl.ClientID)
		}
		seen[strings.ToLower(cl.ClientID)] = true
		if _, ok := priorityFactor(c.Throttling, cl.Priority); !ok {
			return d.errorf(p("identity", "clients", i, "priority"), "priority %q is not Low, Medium or High", cl.Priority)
		}
		if len(cl.Secrets) == 0 && !*cl.AllowAssertion {
			return d.errorf(p("identity", "clients", i), "client %s has no secret and does not allow assertions", cl.ClientID)
		}
	}
	if c.Identity.TokenLifetime.D() < 0 {
		return d.errorf(p("identity", "token_lifetime"), "token_lifetime must not be negative")
	}
	if c.OData.PageSize < 1 {
		return d.errorf(p("odata", "page_size"), "page_size must be at least 1")
	}
	for _, st := range []struct {
		name string
		v    int
	}{{"write_error_status", c.OData.WriteErrorStatus}, {"batch_write_error_status", c.OData.BatchWriteErrorStatus}} {
		if st.v < 400 || st.v > 599 {
			return d.errorf(p("odata", st.name), "%s must be a 4xx or 5xx status", st.name)
		}
	}
	if err := c.Throttling.validate(d, p("throttling")); err != nil {
		return err
	}
	if err := c.Events.validate(d, p("events")); err != nil {
		return err
	}
	for _, x := range []struct {
		path []string
		v    Duration
	}{
		{p("mes", "processing_delay"), c.MES.ProcessingDelay}, {p("mes", "retry_delay"), c.MES.RetryDelay},
		{p("dmf", "not_found_window"), c.DMF.NotFoundWindow}, {p("dmf", "queued_time"), c.DMF.QueuedTime},
		{p("dmf", "execution_time"), c.DMF.ExecutionTime}, {p("dmf", "error_file_delay"), c.DMF.ErrorFileDelay},
		{p("dmf", "sas_lifetime"), c.DMF.SASLifetime},
	} {
		if x.v < 0 {
			return d.errorf(x.path, "%s must not be negative", strings.Join(x.path, "."))
		}
	}
	if c.MES.Attempts < 1 || c.MES.Workers < 1 {
		return d.errorf(p("mes"), "attempts and workers must be at least 1")
	}
	if c.MES.RejectStatus < 400 || c.MES.RejectStatus > 599 {
		return d.errorf(p("mes", "reject_status"), "reject_status must be a 4xx or 5xx status")
	}
	switch c.DMF.Blob.Mode {
	case BlobBuiltin:
	case BlobAzurite:
		if !strings.HasPrefix(c.DMF.Blob.Endpoint, "http://") && !strings.HasPrefix(c.DMF.Blob.Endpoint, "https://") {
			return d.errorf(p("dmf", "blob", "endpoint"), "azurite mode needs an endpoint such as http://127.0.0.1:10000/devstoreaccount1")
		}
	default:
		return d.errorf(p("dmf", "blob", "mode"), "blob mode %q is not builtin or azurite", c.DMF.Blob.Mode)
	}
	switch c.DMF.ReusedExecutionID {
	case "idempotent", "reimport", "reject":
	default:
		return d.errorf(p("dmf", "reused_execution_id"), "reused_execution_id %q is not idempotent, reimport or reject", c.DMF.ReusedExecutionID)
	}
	switch c.DMF.ParallelImports {
	case ParallelFail, ParallelAllow:
	default:
		return d.errorf(p("dmf", "parallel_imports"), "parallel_imports %q is not fail or allow", c.DMF.ParallelImports)
	}
	switch c.DMF.MissingEntityMap {
	case "fail", "succeed_empty":
	default:
		return d.errorf(p("dmf", "missing_entity_map"), "missing_entity_map %q is not fail or succeed_empty", c.DMF.MissingEntityMap)
	}
	if err := c.Faults.validate(d, p("faults")); err != nil {
		return err
	}
	schema := DefaultSchema()
	if c.Schema.ReplaceBuiltin {
		schema = &Schema{Enums: map[string][]string{}}
	}
	for _, f := range c.Schema.Files {
		b, err := os.ReadFile(f)
		if err != nil {
			return d.errorf(p("schema", "files"), "read schema: %v", err)
		}
		s, err := LoadSchema(f, b)
		if err != nil {
			return err
		}
		schema.merge(s)
	}
	if err := schema.index(nil); err != nil {
		return err
	}
	c.schema = schema
	seed := defaultSeed()
	seedDoc := (*yamlDoc)(nil)
	if c.SeedFile != "" {
		b, err := os.ReadFile(c.SeedFile)
		if err != nil {
			return d.errorf(p("seed_file"), "read seed: %v", err)
		}
		seed = &Seed{}
		if seedDoc, err = decodeYAML(c.SeedFile, b, seed); err != nil {
			return err
		}
	}
	if err := seed.validate(seedDoc, schema); err != nil {
		return err
	}
	c.seed = seed
	for i, cl := range c.Identity.Clients {
		if cl.DefaultCompany != "" && !seed.hasCompany(cl.DefaultCompany) {
			return d.errorf(p("identity", "clients", i, "default_company"), "company %s is not in the seed data", cl.DefaultCompany)
		}
	}
	return nil
}

func (t *ThrottleConfig) validate(d *yamlDoc, at []string) error {
	if t.RequestsPerSecond < 0 || t.Burst < 0 || t.Penalty < 0 {
		return d.errorf(at, "requests_per_second, burst and penalty must not be negative")
	}
	for k, v := range t.PriorityFactors {
		switch strings.ToLower(k) {
		case "low", "medium", "high":
		default:
			return d.errorf(append(at, "priority_factors", k), "priority %q is not Low, Medium or High", k)
		}
		if v <= 0 {
			return d.errorf(append(at, "priority_factors", k), "priority factor must be positive")
		}
	}
	for id, o := range t.Clients {
		if len(o.Clients) > 0 {
			return d.errorf(append(at, "clients", id), "client overrides cannot nest")
		}
		if o.RequestsPerSecond < 0 || o.Burst < 0 || o.Penalty < 0 {
			return d.errorf(append(at, "clients", id), "requests_per_second, burst and penalty must not be negative")
		}
	}
	return nil
}

// priorityFactor returns the budget factor of a priority name.
func priorityFactor(t ThrottleConfig, priority string) (float64, bool) {
	key := strings.ToLower(priority)
	switch key {
	case "low", "medium", "high":
	default:
		return 0, false
	}
	if f, ok := t.PriorityFactors[key]; ok {
		return f, true
	}
	for k, f := range t.PriorityFactors {
		if strings.EqualFold(k, key) {
			return f, true
		}
	}
	return map[string]float64{"low": 0.5, "medium": 1, "high": 2}[key], true
}
