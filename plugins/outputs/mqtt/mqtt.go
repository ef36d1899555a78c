// Package mqtt is the "mqtt" sink: it publishes each record to an MQTT
// broker (the plant broker, or plantgate's own embedded broker at its
// listen address), one topic per record from a template of its fields,
// the fields as a JSON object, retained by default. It brings F&O to the
// plant: production orders released or changed, from fo.events, published
// so that MES learns what to build; the flow's map shapes the payload.
//
// A record is acked after the broker acknowledged the PUBLISH (QoS 1 or
// 2); a broker that refuses or is gone makes the batch retry with backoff.
// Publishing the same record twice leaves the same retained message, so
// the sink tolerates duplicates. The client is paho (eclipse/paho.mqtt.golang),
// as the mqtt source's.
package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/plugins/outputs"
)

// SampleConfig is the plugin's annotated sample.
//
//go:embed sample.yaml
var SampleConfig string

// Config is the sink's settings.
type Config struct {
	// Broker is the broker URL: tcp://, ssl://, tls://, ws:// or wss://.
	Broker string `yaml:"broker" required:"true"`
	// ClientID identifies the gateway's publishing connection; each
	// gateway needs its own.
	ClientID string `yaml:"client_id" required:"true"`
	Username string `yaml:"username"`
	// Password is a secret reference.
	Password logging.Secret `yaml:"password"`
	// Topic is the topic template: {name} is replaced by the record's field
	// name (e.g. mes/orders/{ProductionOrderNumber}). A record without the
	// field, or whose value would make a topic with +, # or /, is
	// dead-lettered.
	Topic string `yaml:"topic" required:"true"`
	// QoS of the PUBLISH: 1 (default) or 2; 0 is refused (nothing would
	// confirm the delivery).
	QoS int `yaml:"qos" default:"1" min:"1"`
	// Retain marks the messages retained (default true): a subscriber gets
	// each order's last state when it subscribes.
	Retain *bool `yaml:"retain"`
	// Exclude lists fields used for the topic and not published.
	Exclude []string `yaml:"exclude"`
	// Timeout bounds connecting and each PUBLISH acknowledgement.
	Timeout time.Duration `yaml:"timeout" default:"10s" min:"100ms"`
	// CAFile holds the PEM certificates of the broker's CA (tls); empty:
	// the system roots.
	CAFile string `yaml:"ca_file" file:"ca"`
}

// Validate checks what the tags cannot.
func (c *Config) Validate() error {
	if c.QoS > 2 {
		return fmt.Errorf("qos %d: want 1 or 2", c.QoS)
	}
	if strings.ContainsAny(placeholder.ReplaceAllString(c.Topic, "x"), "+#") {
		return fmt.Errorf("topic %q: wildcards cannot be published to", c.Topic)
	}
	return nil
}

var placeholder = regexp.MustCompile(`\{([^{}]+)\}`)

func init() {
	outputs.Add(pipeline.SinkFactory{
		Type:      "mqtt",
		NewConfig: func() any { return &Config{QoS: 1, Timeout: 10 * time.Second} },
		New: func(cfg any, env pipeline.Env) (pipeline.Sink, error) {
			return New(cfg.(*Config), env)
		},
		// A record published twice leaves the same retained message.
		Dedups: func(cfg any) bool { c := cfg.(*Config); return c.Retain == nil || *c.Retain },
	})
}

// Sink publishes records.
type Sink struct {
	cfg    Config
	retain bool
	log    zerolog.Logger
	opts   *paho.ClientOptions

	mu sync.Mutex
	cl paho.Client

	published, rejected atomic.Int64
	lastErr             atomic.Value // string
}

// New builds the sink; it connects at the first record.
func New(cfg *Config, env pipeline.Env) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sink{cfg: *cfg, retain: cfg.Retain == nil || *cfg.Retain, log: env.Log}
	o := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(cfg.ClientID).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(cfg.Timeout).SetWriteTimeout(cfg.Timeout).SetOrderMatters(true)
	if cfg.Username != "" {
		o.SetUsername(cfg.Username).SetPassword(cfg.Password.Reveal())
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate", cfg.CAFile)
		}
		o.SetTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	}
	s.opts = o
	return s, nil
}

// client returns a connected client, connecting if needed.
func (s *Sink) client() (paho.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl != nil && s.cl.IsConnectionOpen() {
		return s.cl, nil
	}
	if s.cl != nil {
		s.cl.Disconnect(0)
	}
	cl := paho.NewClient(s.opts)
	tok := cl.Connect()
	if !tok.WaitTimeout(s.cfg.Timeout) {
		cl.Disconnect(0)
		return nil, fmt.Errorf("connect to %s: no answer within %s", s.cfg.Broker, s.cfg.Timeout)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect to %s: %s", s.cfg.Broker, logging.RedactText(err.Error()))
	}
	s.cl = cl
	return cl, nil
}

// Topic returns the topic of r, or why it has none.
func (s *Sink) Topic(r pipeline.Record) (string, error) {
	var missing []string
	topic := placeholder.ReplaceAllStringFunc(s.cfg.Topic, func(m string) string {
		name := m[1 : len(m)-1]
		v, ok := r.Fields[name]
		if !ok || v == nil || fmt.Sprint(v) == "" {
			missing = append(missing, name)
			return ""
		}
		return fmt.Sprint(v)
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("no %s in the record for topic %s", strings.Join(missing, ", "), s.cfg.Topic)
	}
	if strings.ContainsAny(topic, "+#\x00") {
		return "", fmt.Errorf("topic %q holds a wildcard or NUL", topic)
	}
	return topic, nil
}

// Payload returns the JSON payload of r.
func (s *Sink) Payload(r pipeline.Record) ([]byte, error) {
	out := make(map[string]any, len(r.Fields))
	for k, v := range r.Fields {
		out[k] = v
	}
	for _, k := range s.cfg.Exclude {
		delete(out, k)
	}
	return json.Marshal(out)
}

// Write publishes the batch in order, one PUBLISH acknowledged at a time
// per key.
func (s *Sink) Write(ctx context.Context, batch []pipeline.Record) error {
	return pipeline.ForEach(ctx, batch, func(_ int, r pipeline.Record) error {
		topic, err := s.Topic(r)
		if err != nil {
			s.rejected.Add(1)
			return pipeline.Permanent(err)
		}
		body, err := s.Payload(r)
		if err != nil {
			s.rejected.Add(1)
			return pipeline.Permanent(fmt.Errorf("encode the payload: %w", err))
		}
		cl, err := s.client()
		if err != nil {
			s.lastErr.Store(err.Error())
			return err
		}
		tok := cl.Publish(topic, byte(s.cfg.QoS), s.retain, body)
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.cfg.Timeout):
			s.drop(cl)
			err := fmt.Errorf("publish to %s: no acknowledgement within %s", topic, s.cfg.Timeout)
			s.lastErr.Store(err.Error())
			return err
		}
		if err := tok.Error(); err != nil {
			s.drop(cl)
			err = fmt.Errorf("publish to %s: %w", topic, err)
			s.lastErr.Store(err.Error())
			return err
		}
		s.published.Add(1)
		return nil
	})
}

// drop forgets a client that failed, so the next record reconnects.
func (s *Sink) drop(cl paho.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl == cl {
		s.cl.Disconnect(0)
		s.cl = nil
	}
}

// Probe connects (if not connected).
func (s *Sink) Probe(context.Context) error {
	_, err := s.client()
	return err
}

// Status implements pipeline.StatusReporter.
func (s *Sink) Status() map[string]any {
	s.mu.Lock()
	connected := s.cl != nil && s.cl.IsConnectionOpen()
	s.mu.Unlock()
	st := map[string]any{"broker": s.cfg.Broker, "topic": s.cfg.Topic, "connected": connected, "published": s.published.Load(), "rejected": s.rejected.Load()}
	if e, _ := s.lastErr.Load().(string); e != "" {
		st["last_error"] = e
	}
	return st
}

// Close disconnects.
func (s *Sink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl != nil {
		s.cl.Disconnect(250)
		s.cl = nil
	}
	return nil
}

var (
	_ pipeline.Sink           = (*Sink)(nil)
	_ pipeline.Closer         = (*Sink)(nil)
	_ pipeline.Prober         = (*Sink)(nil)
	_ pipeline.StatusReporter = (*Sink)(nil)
)
