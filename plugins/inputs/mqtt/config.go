package mqtt

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/plantgate/plantgate/internal/logging"
)

// Config is the mqtt source's settings. Exactly one of Broker (client mode)
// and Embedded (embedded broker mode) is set.
type Config struct {
	// Broker is the URL of the plant broker: tcp://, mqtt://, ssl://,
	// tls://, mqtts://, ws:// or wss://.
	Broker string `yaml:"broker"`
	// ClientID is the fixed client id of the persistent session. Required
	// in client mode; each gateway needs its own.
	ClientID string `yaml:"client_id"`
	// Username for the broker (client mode).
	Username string `yaml:"username"`
	// Password for the broker (client mode).
	Password logging.Secret `yaml:"password"`
	// QoS is the subscription QoS of topics that do not name their own.
	QoS int `yaml:"qos" default:"1" min:"0"`
	// Topics are the filters to subscribe to (client mode) or to ingest
	// (embedded mode, default all but $SYS). A filter may be a shared
	// subscription, $share/<group>/<filter>.
	Topics []Topic `yaml:"topics"`
	// Format of payloads: json, csv or raw.
	Format string `yaml:"format" default:"json" enum:"json,csv,raw"`
	// CSVHeader names the columns of a csv payload.
	CSVHeader []string `yaml:"csv_header"`
	// CSVDelimiter separates csv columns.
	CSVDelimiter string `yaml:"csv_delimiter" default:","`
	// MaxPayloadBytes is the largest payload decoded; a larger one is
	// dead-lettered (its first MaxPayloadBytes bytes are kept).
	MaxPayloadBytes int `yaml:"max_payload_bytes" default:"1048576" min:"1"`
	// KeepAlive is the MQTT keep-alive interval (client mode).
	KeepAlive time.Duration `yaml:"keep_alive" default:"30s" min:"1s"`
	// ConnectTimeout bounds one connection attempt (client mode).
	ConnectTimeout time.Duration `yaml:"connect_timeout" default:"10s" min:"100ms"`
	// ReconnectInitial is the first wait after a failed connection attempt.
	ReconnectInitial time.Duration `yaml:"reconnect_initial" default:"1s" min:"10ms"`
	// ReconnectMax caps the wait between connection attempts.
	ReconnectMax time.Duration `yaml:"reconnect_max" default:"1m" min:"10ms"`
	// MaxInFlight is the most messages received but not yet acknowledged
	// (client mode). When they are all waiting for the queue, plantgate
	// stops reading from the broker.
	MaxInFlight int `yaml:"max_in_flight" default:"5000" min:"1"`
	// BatchMax is the most messages per queue commit (client mode).
	BatchMax int `yaml:"batch_max" default:"1000" min:"1"`
	// PauseAfter is how long a queue commit may wait for space before
	// plantgate disconnects from the broker until space frees (client mode).
	PauseAfter time.Duration `yaml:"pause_after" default:"5s" min:"10ms"`
	// TLS configures the connection to the broker (client mode).
	TLS ClientTLS `yaml:"tls"`
	// Embedded runs a broker inside plantgate instead of connecting to one.
	Embedded *Embedded `yaml:"embedded"`
}

// ClientTLS is the TLS setup of client mode.
type ClientTLS struct {
	// CAFile holds the PEM certificates that sign the broker's certificate;
	// empty uses the system roots.
	CAFile string `yaml:"ca_file" file:"ca"`
	// CertFile is the PEM client certificate, for brokers that require
	// client certificates.
	CertFile string `yaml:"cert_file" file:"cert"`
	// KeyFile is the PEM key of CertFile.
	KeyFile string `yaml:"key_file" file:"key"`
	// ServerName overrides the name checked in the broker's certificate.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any broker certificate. Tests only: it
	// makes the connection open to interception, and plantgate warns.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

func (t ClientTLS) set() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// Embedded is the embedded broker's setup.
type Embedded struct {
	// Listen is the TCP address to listen on.
	Listen string `yaml:"listen" default:"127.0.0.1:1883" listen:"true"`
	// TLS makes the listener speak TLS.
	TLS *ServerTLS `yaml:"tls"`
	// Users may connect with their password and use the topics they are
	// allowed.
	Users []User `yaml:"users"`
	// AllowAnonymous lets clients without a username connect, publish and
	// subscribe to every topic. Tests and labs only; plantgate warns.
	AllowAnonymous bool `yaml:"allow_anonymous"`
}

// ServerTLS is the embedded broker's TLS setup.
type ServerTLS struct {
	// CertFile is the broker's PEM certificate (chain).
	CertFile string `yaml:"cert_file" required:"true" file:"cert"`
	// KeyFile is the PEM key of CertFile.
	KeyFile string `yaml:"key_file" required:"true" file:"key"`
	// ClientCAFile, when set, requires every client to present a
	// certificate signed by one of its PEM certificates.
	ClientCAFile string `yaml:"client_ca_file" file:"ca"`
}

// User is one account of the embedded broker.
type User struct {
	// Username identifies the account in CONNECT.
	Username string `yaml:"username" required:"true"`
	// Password is compared in constant time; a secret reference.
	Password logging.Secret `yaml:"password" required:"true"`
	// Allow lists the topic filters the user may publish and subscribe to.
	Allow ACL `yaml:"allow"`
}

// ACL lists topic filters.
type ACL struct {
	// Publish lists the filters whose topics the user may publish to.
	Publish []string `yaml:"publish"`
	// Subscribe lists the filters the user may subscribe within.
	Subscribe []string `yaml:"subscribe"`
}

// Topic is one subscription: a filter and optionally its own QoS. In the
// config file it is a filter string or a mapping {filter, qos}.
type Topic struct {
	// Filter is an MQTT topic filter, possibly $share/<group>/<filter>.
	Filter string `yaml:"filter"`
	// QoS overrides the source's qos for this filter when not nil.
	QoS *int `yaml:"qos"`
}

// UnmarshalConfig implements the config loader's Unmarshaler: a topic is a
// string or a mapping with filter and qos.
func (t *Topic) UnmarshalConfig(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		t.Filter = n.Value
		return nil
	case yaml.MappingNode:
	default:
		return errors.New("want a topic filter or a mapping {filter, qos}")
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "filter":
			if v.Kind != yaml.ScalarNode {
				return errors.New("filter: want a string")
			}
			t.Filter = v.Value
		case "qos":
			if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
				t.QoS = nil
				continue
			}
			q, err := strconv.Atoi(v.Value)
			if v.Kind != yaml.ScalarNode || err != nil || q < 0 || q > 2 {
				return fmt.Errorf("qos: want 0, 1 or 2, got %q", v.Value)
			}
			t.QoS = &q
		default:
			return fmt.Errorf("unknown key %q (valid: filter, qos)", k.Value)
		}
	}
	if t.Filter == "" {
		return errors.New("missing filter")
	}
	return nil
}

// qos returns the topic's QoS, or def.
func (t Topic) qos(def int) byte {
	if t.QoS != nil {
		return byte(*t.QoS)
	}
	return byte(def)
}

// Validate checks what the tags cannot express.
func (c *Config) Validate() error {
	var errs []error
	if c.QoS < 0 || c.QoS > 2 {
		errs = append(errs, fmt.Errorf("qos %d: want 0, 1 or 2", c.QoS))
	}
	if c.Format == "csv" && len(c.CSVHeader) == 0 {
		errs = append(errs, errors.New("format csv needs csv_header"))
	}
	for _, t := range c.Topics {
		if err := validFilter(t.Filter); err != nil {
			errs = append(errs, fmt.Errorf("topics: %w", err))
		}
		if t.QoS != nil && (*t.QoS < 0 || *t.QoS > 2) {
			errs = append(errs, fmt.Errorf("topics: %s: qos %d not 0, 1 or 2", t.Filter, *t.QoS))
		}
	}
	if c.Embedded == nil && c.PauseAfter >= c.KeepAlive {
		errs = append(errs, errors.New("pause_after must be shorter than keep_alive: a reading pause longer than keep-alive ends the connection"))
	}
	if c.ReconnectMax < c.ReconnectInitial {
		errs = append(errs, errors.New("reconnect_max is shorter than reconnect_initial"))
	}
	switch {
	case c.Embedded != nil && c.Broker != "":
		errs = append(errs, errors.New("set either broker (connect to a broker) or embedded (run one), not both"))
	case c.Embedded != nil:
		errs = append(errs, c.Embedded.validate(c)...)
	case c.Broker == "":
		errs = append(errs, errors.New("broker is required (or embedded, to run a broker inside plantgate)"))
	default:
		errs = append(errs, c.validateClient()...)
	}
	return errors.Join(errs...)
}

func (c *Config) validateClient() []error {
	var errs []error
	u, err := url.Parse(c.Broker)
	if err != nil || u.Host == "" {
		errs = append(errs, fmt.Errorf("broker %q: want a URL such as tcp://broker:1883 or tls://broker:8883", c.Broker))
	} else {
		switch strings.ToLower(u.Scheme) {
		case "tcp", "mqtt", "ws":
			if c.TLS.set() {
				errs = append(errs, fmt.Errorf("tls settings need a tls://, ssl://, mqtts:// or wss:// broker, not %s://", u.Scheme))
			}
		case "ssl", "tls", "mqtts", "tcps", "wss":
		default:
			errs = append(errs, fmt.Errorf("broker scheme %q: want tcp, mqtt, ssl, tls, mqtts, ws or wss", u.Scheme))
		}
		if u.User != nil {
			errs = append(errs, errors.New("broker: put credentials in username and password, not in the URL"))
		}
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("client_id is required: the persistent session that holds unacknowledged messages is bound to it"))
	} else if len(c.ClientID) > 65535 {
		errs = append(errs, errors.New("client_id is longer than 65535 bytes"))
	}
	if len(c.Topics) == 0 {
		errs = append(errs, errors.New("topics: at least one topic filter is required"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("tls: cert_file and key_file go together"))
	}
	return errs
}

func (e *Embedded) validate(c *Config) []error {
	var errs []error
	if _, _, err := net.SplitHostPort(e.Listen); err != nil {
		errs = append(errs, fmt.Errorf("embedded.listen %q: want host:port", e.Listen))
	}
	if c.ClientID != "" || c.Username != "" || !c.Password.IsZero() || c.TLS.set() {
		errs = append(errs, errors.New("client_id, username, password and tls are for client mode; the embedded broker has embedded.users and embedded.tls"))
	}
	if len(e.Users) == 0 && !e.AllowAnonymous {
		errs = append(errs, errors.New("embedded: no users and allow_anonymous is false, so no client could connect"))
	}
	seen := map[string]bool{}
	for _, u := range e.Users {
		if seen[u.Username] {
			errs = append(errs, fmt.Errorf("embedded.users: username %q appears twice", u.Username))
		}
		seen[u.Username] = true
		for _, f := range slices.Concat(u.Allow.Publish, u.Allow.Subscribe) {
			if err := validFilter(f); err != nil {
				errs = append(errs, fmt.Errorf("embedded.users %s: %w", u.Username, err))
			}
		}
	}
	return errs
}

// validFilter checks an MQTT topic filter, allowing a $share prefix.
func validFilter(f string) error {
	if f == "" {
		return errors.New("empty topic filter")
	}
	if strings.ContainsRune(f, 0) {
		return fmt.Errorf("topic filter %q contains a NUL", f)
	}
	g := f
	if strings.HasPrefix(f, "$share/") {
		parts := strings.SplitN(f, "/", 3)
		if len(parts) < 3 || parts[1] == "" || parts[2] == "" || strings.ContainsAny(parts[1], "+#") {
			return fmt.Errorf("topic filter %q: want $share/<group>/<filter>", f)
		}
		g = parts[2]
	}
	levels := strings.Split(g, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return fmt.Errorf("topic filter %q: # must be a whole last level", f)
		}
		if strings.Contains(l, "+") && l != "+" {
			return fmt.Errorf("topic filter %q: + must be a whole level", f)
		}
	}
	return nil
}
