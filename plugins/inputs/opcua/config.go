package opcua

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/rules"
)

// Config is the opcua source's settings.
type Config struct {
	// Endpoint is the server's opc.tcp:// URL.
	Endpoint string `yaml:"endpoint" required:"true"`
	// Security picks the endpoint's security policy and mode.
	Security Security `yaml:"security"`
	// Auth is the user identity of the session.
	Auth Auth `yaml:"auth"`
	// ServerFingerprint pins the server's certificate by its SHA-256
	// fingerprint (hex, colons allowed): only that certificate is
	// accepted, whatever the trusted folder holds.
	ServerFingerprint string `yaml:"server_fingerprint"`
	// ApplicationURI is the gateway's OPC UA application URI, written into
	// its certificate (default urn:plantgate:<gateway id>:<source>).
	ApplicationURI string `yaml:"application_uri"`
	// Mode is subscribe (monitored items) or poll (Read every
	// poll_interval, for servers that handle subscriptions badly).
	Mode string `yaml:"mode" default:"subscribe" enum:"subscribe,poll"`
	// PollInterval is the Read cycle of poll mode.
	PollInterval time.Duration `yaml:"poll_interval" default:"1s" min:"10ms"`
	// PublishingInterval is the subscription's publishing interval.
	PublishingInterval time.Duration `yaml:"publishing_interval" default:"500ms" min:"10ms"`
	// KeepAliveCount is how many empty publishing intervals the server
	// waits before it sends a keep-alive.
	KeepAliveCount int `yaml:"keep_alive_count" default:"10" min:"1"`
	// LifetimeCount is how many publishing intervals without a Publish
	// request the server keeps the subscription (and its queued
	// notifications) alive: a network outage shorter than this loses
	// nothing.
	LifetimeCount int `yaml:"lifetime_count" default:"2400" min:"3"`
	// SessionTimeout is how long the server keeps the session after the
	// connection is lost; within it the session is reactivated on a new
	// secure channel.
	SessionTimeout time.Duration `yaml:"session_timeout" default:"10m" min:"1s"`
	// RequestTimeout bounds one service call (Read, Browse, Create...).
	RequestTimeout time.Duration `yaml:"request_timeout" default:"10s" min:"100ms"`
	// ReconnectInitial is the first wait after a lost or failed connection.
	ReconnectInitial time.Duration `yaml:"reconnect_initial" default:"500ms" min:"10ms"`
	// ReconnectMax caps the wait between connection attempts.
	ReconnectMax time.Duration `yaml:"reconnect_max" default:"5s" min:"10ms"`
	// RetryNodes is how often nodes the server did not know are tried
	// again.
	RetryNodes time.Duration `yaml:"retry_nodes" default:"30s" min:"100ms"`
	// CertWarning is how long before a certificate's expiry status warns.
	CertWarning time.Duration `yaml:"cert_warning" default:"672h" min:"1h"`
	// EmitValues sends every value change through the flows as a message
	// (meta.kind "value"), besides the rules' events.
	EmitValues bool `yaml:"emit_values"`
	// Nodes are the values read from the server, by name.
	Nodes map[string]*Node `yaml:"nodes" required:"true"`
	// Rules turn the values into events (meta.kind "event").
	Rules map[string]*Rule `yaml:"rules"`
}

// Security is the endpoint choice.
type Security struct {
	// Policy is None, Basic256Sha256, Aes128_Sha256_RsaOaep,
	// Aes256_Sha256_RsaPss, or auto (the most secure the server offers).
	Policy string `yaml:"policy" default:"Basic256Sha256" enum:"None,Basic256Sha256,Aes128_Sha256_RsaOaep,Aes256_Sha256_RsaPss,auto"`
	// Mode is None, Sign or SignAndEncrypt (ignored with policy auto).
	Mode string `yaml:"mode" default:"SignAndEncrypt" enum:"None,Sign,SignAndEncrypt"`
}

// Auth is the session's user identity.
type Auth struct {
	// Type is anonymous, username or certificate.
	Type string `yaml:"type" default:"anonymous" enum:"anonymous,username,certificate"`
	// Username and Password for type username.
	Username string         `yaml:"username"`
	Password logging.Secret `yaml:"password"`
	// CertFile (DER or PEM) and KeyFile (PEM, PKCS#1 or PKCS#8) for type
	// certificate: the user's X.509 identity, not the application's.
	CertFile string `yaml:"cert_file" file:"read"`
	KeyFile  string `yaml:"key_file" file:"key"`
}

// Node is one monitored value.
type Node struct {
	// Node is the node id, preferably by namespace URI:
	// nsu=urn:line3;s=Counters.Good (ns=<index> works but breaks when the
	// server renumbers its namespaces).
	Node string `yaml:"node" required:"true"`
	// Sampling is the server's sampling interval for the item (0: as fast
	// as the publishing interval).
	Sampling time.Duration `yaml:"sampling" default:"500ms"`
	// QueueSize is how many values the server keeps per item between two
	// publishes (1: only the latest).
	QueueSize int `yaml:"queue_size" default:"10" min:"1"`
	// DiscardOldest drops the oldest queued value when the item's queue is
	// full (false: the newest).
	DiscardOldest *bool `yaml:"discard_oldest"`
	// Deadband filters small changes of an analog value.
	Deadband *Deadband `yaml:"deadband"`
}

// Deadband is a data change filter.
type Deadband struct {
	// Type is absolute or percent (of the item's EURange).
	Type string `yaml:"type" default:"absolute" enum:"absolute,percent"`
	// Value is the smallest change reported.
	Value float64 `yaml:"value" required:"true"`
}

// Rule is one event rule (see internal/rules).
type Rule struct {
	// Kind is counter, rising, falling, change or held.
	Kind string `yaml:"kind" required:"true" enum:"counter,rising,falling,change,held"`
	// Value names the node the rule watches.
	Value string `yaml:"value" required:"true"`
	// WrapAt is a counter's modulus (65536 for a 16-bit counter).
	WrapAt float64 `yaml:"wrap_at"`
	// To and From restrict a change rule.
	To   any `yaml:"to"`
	From any `yaml:"from"`
	// Equals and For make a held rule.
	Equals any           `yaml:"equals"`
	For    time.Duration `yaml:"for"`
	// Include names the values attached to the events (default all).
	Include []string `yaml:"include"`
}

// Validate checks what the tags cannot express.
func (c *Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.Endpoint)
	if err != nil || u.Scheme != "opc.tcp" || u.Host == "" {
		errs = append(errs, fmt.Errorf("endpoint %q: want opc.tcp://host:port[/path]", c.Endpoint))
	} else if u.User != nil {
		errs = append(errs, errors.New("endpoint: put credentials in auth, not in the URL"))
	}
	if c.Security.Policy == "None" && c.Security.Mode != "None" {
		errs = append(errs, fmt.Errorf("security: policy None goes with mode None, not %s", c.Security.Mode))
	}
	if c.Security.Policy != "None" && c.Security.Policy != "auto" && c.Security.Mode == "None" {
		errs = append(errs, fmt.Errorf("security: policy %s needs mode Sign or SignAndEncrypt", c.Security.Policy))
	}
	switch c.Auth.Type {
	case "username":
		if c.Auth.Username == "" || c.Auth.Password.IsZero() {
			errs = append(errs, errors.New("auth: type username needs username and password"))
		}
	case "certificate":
		if c.Auth.CertFile == "" || c.Auth.KeyFile == "" {
			errs = append(errs, errors.New("auth: type certificate needs cert_file and key_file"))
		}
	}
	if c.ServerFingerprint != "" {
		if _, err := parseFingerprint(c.ServerFingerprint); err != nil {
			errs = append(errs, fmt.Errorf("server_fingerprint: %w", err))
		}
	}
	if len(c.Nodes) == 0 {
		errs = append(errs, errors.New("nodes: at least one node is required"))
	}
	for _, name := range sortedKeys(c.Nodes) {
		n := c.Nodes[name]
		if n == nil {
			continue
		}
		if _, err := ParseNodeRef(n.Node); err != nil {
			errs = append(errs, fmt.Errorf("nodes.%s.node: %w", name, err))
		}
		if n.Sampling < 0 {
			errs = append(errs, fmt.Errorf("nodes.%s.sampling: negative", name))
		}
	}
	if c.ReconnectMax < c.ReconnectInitial {
		errs = append(errs, errors.New("reconnect_max is shorter than reconnect_initial"))
	}
	if _, err := c.rules(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// rules converts the configured rules.
func (c *Config) rules() ([]rules.Rule, error) {
	var out []rules.Rule
	var errs []error
	for _, name := range sortedKeys(c.Rules) {
		r := c.Rules[name]
		if r == nil {
			continue
		}
		if _, ok := c.Nodes[r.Value]; !ok {
			errs = append(errs, fmt.Errorf("rules.%s.value: no node named %q (nodes: %s)", name, r.Value, strings.Join(sortedKeys(c.Nodes), ", ")))
		}
		for _, inc := range r.Include {
			if _, ok := c.Nodes[inc]; !ok {
				errs = append(errs, fmt.Errorf("rules.%s.include: no node named %q", name, inc))
			}
		}
		rr := rules.Rule{Name: name, Kind: r.Kind, Value: r.Value, WrapAt: r.WrapAt, To: r.To, From: r.From, Equals: r.Equals, For: r.For, Include: r.Include}
		if err := rr.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("rules.%s: %w", name, err))
			continue
		}
		out = append(out, rr)
	}
	return out, errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
