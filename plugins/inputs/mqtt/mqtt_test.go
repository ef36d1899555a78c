package mqtt

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/codec"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/plugins/inputs"
)

// parse loads a config whose only source is the mqtt source given as YAML
// lines (indented under the source), with the strict loader.
func parse(t *testing.T, source string) (*Config, error) {
	t.Helper()
	body := "gateway: {id: t}\nsources:\n  mes:\n    type: mqtt\n" + source +
		"sinks: {out: {type: x}}\nflows: {f: {from: mes, to: out}}\n"
	opts := config.Options{
		SourceConfig: inputs.NewConfig,
		SinkConfig:   func(string) (any, bool) { return nil, true },
		Env:          func(n string) (string, bool) { return "secret-" + n, true },
	}
	cfg, err := config.Parse("test.yaml", []byte(body), opts)
	if err != nil {
		return nil, err
	}
	return cfg.Sources["mes"].Settings.(*Config), nil
}

func TestConfigLoads(t *testing.T) {
	c, err := parse(t, `    broker: tls://broker:8883
    client_id: pg-1
    username: pg
    password: ${env:MQTT_PW}
    topics:
      - a/#
      - {filter: b/+/c, qos: 2}
      - $share/g/d/#
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.QoS != 1 || c.Format != "json" || c.MaxPayloadBytes != 1<<20 || c.KeepAlive != 30*time.Second || c.PauseAfter != 5*time.Second || c.MaxInFlight != 5000 {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if len(c.Topics) != 3 || c.Topics[0].qos(c.QoS) != 1 || c.Topics[1].qos(c.QoS) != 2 || c.Topics[2].Filter != "$share/g/d/#" {
		t.Fatalf("topics %+v", c.Topics)
	}
	if c.Password.Reveal() != "secret-MQTT_PW" || fmt.Sprint(c.Password) != logging.Redacted {
		t.Fatalf("password %q", c.Password.Reveal())
	}

	e, err := parse(t, `    embedded:
      users:
        - {username: mes, password: "${env:P}", allow: {publish: [mes/#]}}
`)
	if err != nil {
		t.Fatal(err)
	}
	if e.Embedded.Listen != "127.0.0.1:1883" {
		t.Fatalf("embedded listen default %q", e.Embedded.Listen)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"    client_id: x\n    topics: [a]\n", "broker is required"},
		{"    broker: tcp://b:1883\n    topics: [a]\n", "client_id is required"},
		{"    broker: tcp://b:1883\n    client_id: x\n", "at least one topic filter"},
		{"    broker: http://b\n    client_id: x\n    topics: [a]\n", `broker scheme "http"`},
		{"    broker: tcp://u:p@b:1883\n    client_id: x\n    topics: [a]\n", "not in the URL"},
		{"    broker: tcp://b:1883\n    client_id: x\n    topics: [a]\n    tls: {ca_file: ca.pem}\n", "tls settings need a tls://"},
		{"    broker: tcp://b:1883\n    client_id: x\n    topics: [a/#/b]\n", "# must be a whole last level"},
		{"    broker: tcp://b:1883\n    client_id: x\n    topics: [a+]\n", "+ must be a whole level"},
		{"    broker: tcp://b:1883\n    client_id: x\n    topics: [$share/g]\n", "$share/<group>/<filter>"},
		{"    broker: tcp://b:1883\n    client_id: x\n    topics: [{filter: a, qos: 3}]\n", "qos: want 0, 1 or 2"},
		{"    broker: tcp://b:1883\n    client_id: x\n    topics: [{filter: a, color: red}]\n", `unknown key "color"`},
		{"    broker: tcp://b:1883\n    client_id: x\n    topics: [{qos: 1}]\n", "missing filter"},
		{"    broker: tcp://b:1883\n    client_id: x\n    topics: [a]\n    format: csv\n", "format csv needs csv_header"},
		{"    broker: tcp://b:1883\n    client_id: x\n    topics: [a]\n    qos: 3\n", "qos"},
		{"    broker: tcp://b:1883\n    client_id: x\n    topics: [a]\n    tls: {cert_file: c.pem}\n", "tls settings need"},
		{"    broker: tls://b:8883\n    client_id: x\n    topics: [a]\n    tls: {cert_file: c.pem}\n", "cert_file and key_file go together"},
		{"    broker: tcp://b:1883\n    embedded: {allow_anonymous: true}\n", "not both"},
		{"    broker: tcp://b:1883\n    client_id: x\n    topics: [a]\n    pause_after: 1m\n", "pause_after must be shorter than keep_alive"},
		{"    embedded: {}\n", "no users and allow_anonymous is false"},
		{"    client_id: x\n    embedded: {allow_anonymous: true}\n", "for client mode"},
		{"    embedded: {listen: nowhere, allow_anonymous: true}\n", "want an address host:port"},
		{"    embedded:\n      users: [{username: a, password: x, allow: {publish: [a#]}}, {username: a, password: y}]\n", `username "a" appears twice`},
	} {
		t.Run(tc.want, func(t *testing.T) {
			_, err := parse(t, tc.yaml)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestNewReadsTLSFiles(t *testing.T) {
	cfg := Config{Broker: "tls://b:8883", ClientID: "x", Topics: []Topic{{Filter: "a"}}, TLS: ClientTLS{CAFile: "/nonexistent/ca.pem"}}
	if _, err := New(&cfg, pipeline.Env{Name: "m"}); err == nil || !strings.Contains(err.Error(), "tls.ca_file") {
		t.Fatalf("error %v", err)
	}
	cfg = Config{Embedded: &Embedded{AllowAnonymous: true, TLS: &ServerTLS{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}}}
	if _, err := New(&cfg, pipeline.Env{Name: "m"}); err == nil || !strings.Contains(err.Error(), "embedded.tls certificate") {
		t.Fatalf("error %v", err)
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true}, {"a/b", "a/c", false}, {"a/+", "a/b", true}, {"a/+", "a/b/c", false}, {"a/+", "a", false},
		{"a/#", "a", true}, {"a/#", "a/b/c", true}, {"#", "a/b", true}, {"#", "$SYS/x", false}, {"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true}, {"+/+", "a/", true}, {"$share/g/a/+", "a/b", true}, {"a/b", "a/b/c", false}, {"a/b/c", "a/b", false},
	} {
		if got := match(tc.filter, tc.topic); got != tc.want {
			t.Errorf("match(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
	for _, tc := range []struct {
		allowed, sub string
		want         bool
	}{
		{"a/#", "a/b", true}, {"a/#", "a/#", true}, {"a/#", "a", true}, {"a/#", "#", false}, {"a/+", "a/b", true},
		{"a/+", "a/+", true}, {"a/+", "a/#", false}, {"a/b", "a/+", false}, {"#", "$SYS/#", false}, {"a/+/c", "a/x/c", true},
		{"a/+/c", "a/+/c", true}, {"a/+/c", "a/x/d", false}, {"$share/g/a/#", "a/b", true}, {"a/#", "$share/g/a/b", true},
	} {
		if got := covers(tc.allowed, tc.sub); got != tc.want {
			t.Errorf("covers(%q, %q) = %v, want %v", tc.allowed, tc.sub, got, tc.want)
		}
	}
}

func TestDecodeMessage(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		cfg     Config
		p       publish
		payload string
		err     string
		meta    map[string]any
	}{
		{"json", Config{}, publish{Topic: "t", Payload: []byte(`{"a":1}`), QoS: 1, PacketID: 9, Received: at}, "map[a:1]", "",
			map[string]any{MetaTopic: "t", MetaQoS: 1, MetaMessageID: 9, MetaDuplicate: false, MetaRetained: false, MetaReceivedAt: at}},
		{"qos0 has no id", Config{}, publish{Topic: "t", Payload: []byte(`1`), Retained: true, Received: at}, "1", "",
			map[string]any{MetaTopic: "t", MetaQoS: 0, MetaDuplicate: false, MetaRetained: true, MetaReceivedAt: at}},
		{"csv", Config{Format: "csv", CSVHeader: []string{"order", "qty"}}, publish{Topic: "t", Payload: []byte("P1,3"), Received: at}, "map[order:P1 qty:3]", "", nil},
		{"raw", Config{Format: "raw"}, publish{Topic: "t", Payload: []byte("hi"), Received: at}, "hi", "", nil},
		{"bad json", Config{}, publish{Topic: "t", Payload: []byte(`{`), Received: at}, "", "json: unexpected EOF", nil},
		{"binary", Config{}, publish{Topic: "t", Payload: []byte{0xff, 0}, Received: at}, "", "not valid UTF-8", nil},
		{"too large", Config{MaxPayloadBytes: 4}, publish{Topic: "t", Payload: []byte(`"12345"`), Received: at}, "", "payload of 7 bytes on topic \"t\" exceeds max_payload_bytes 4", nil},
		{"embedded", Config{}, publish{Topic: "t", Payload: []byte(`{}`), QoS: 2, Dup: true, PacketID: 1, Received: at, BrokerTime: at, ClientID: "c", Username: "u", UserProps: map[string]any{"k": "v"}}, "map[]", "",
			map[string]any{MetaTopic: "t", MetaQoS: 2, MetaMessageID: 1, MetaDuplicate: true, MetaRetained: false, MetaReceivedAt: at, MetaBrokerTime: at, MetaClientID: "c", MetaUsername: "u", MetaUserProps: map[string]any{"k": "v"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			setDefaults(&c)
			d, err := newDecoder(&c)
			if err != nil {
				t.Fatal(err)
			}
			m := d.message(tc.p)
			if tc.err != "" {
				if m.DecodeErr == nil || !strings.Contains(m.DecodeErr.Error(), tc.err) || m.Payload != nil || len(m.Raw) == 0 {
					t.Fatalf("got err %v payload %v raw %q, want error %q", m.DecodeErr, m.Payload, m.Raw, tc.err)
				}
				return
			}
			if m.DecodeErr != nil || fmt.Sprint(m.Payload) != tc.payload || !m.Time.Equal(at) {
				t.Fatalf("got %v (err %v), want %s", m.Payload, m.DecodeErr, tc.payload)
			}
			if tc.meta != nil && fmt.Sprint(m.Meta) != fmt.Sprint(tc.meta) {
				t.Fatalf("meta\n got %v\nwant %v", m.Meta, tc.meta)
			}
		})
	}
	d, _ := newDecoder(&Config{MaxPayloadBytes: 4})
	m := d.message(publish{Topic: "t", Payload: []byte("123456")})
	if len(m.Raw) != 4 || m.Meta[MetaTruncated] != true || !errors.Is(codec.ErrTooLarge, codec.ErrTooLarge) {
		t.Fatalf("raw %q meta %v", m.Raw, m.Meta)
	}
}

// FuzzDecodeMessage feeds arbitrary publishes through the function that
// turns an MQTT message into a pipeline.Message: it must never panic, and
// the result must be either a payload or a decode error with raw bytes.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{`{"msg_id":"a","order":"P1"}`, `[1,2]`, "P1,3", "\xff\xfe", "", `{"a":` + strings.Repeat("[", 100), `"x"`} {
		f.Add("mes/line1", []byte(s), byte(1), false, uint16(1))
	}
	f.Add("$share/g/x", []byte(`1e999`), byte(2), true, uint16(65535))
	var decs []*decoder
	for _, c := range []Config{{}, {Format: "csv", CSVHeader: []string{"a", "b"}}, {Format: "raw"}, {MaxPayloadBytes: 16}} {
		setDefaults(&c)
		d, err := newDecoder(&c)
		if err != nil {
			f.Fatal(err)
		}
		decs = append(decs, d)
	}
	f.Fuzz(func(t *testing.T, topic string, payload []byte, qos byte, dup bool, id uint16) {
		for _, d := range decs {
			m := d.message(publish{Topic: topic, Payload: payload, QoS: qos % 3, Dup: dup, PacketID: id, Received: time.Unix(0, 0)})
			if m.DecodeErr != nil && m.Payload != nil {
				t.Fatalf("payload %v with error %v", m.Payload, m.DecodeErr)
			}
			if m.DecodeErr != nil && len(m.Raw) > d.maxBytes {
				t.Fatalf("dead letter keeps %d bytes, limit %d", len(m.Raw), d.maxBytes)
			}
			if m.Meta[MetaTopic] != topic {
				t.Fatalf("topic %v", m.Meta[MetaTopic])
			}
		}
	})
}

func TestRecentAndRate(t *testing.T) {
	r := newRecent()
	if r.seen("a", []byte("x")) || !r.seen("a", []byte("x")) || r.seen("b", []byte("x")) {
		t.Fatal("recent does not spot a repeat")
	}
	for i := range recentSize + 10 {
		r.seen("fill", fmt.Appendf(nil, "%d", i))
	}
	if r.seen("a", []byte("x")) || len(r.set) > recentSize {
		t.Fatalf("old entries not forgotten: %d", len(r.set))
	}
	var m rateMeter
	t0 := time.Unix(0, 0)
	for i := range 20 {
		m.sample(t0.Add(time.Duration(i)*time.Second), int64(i*100))
	}
	if got := m.perSecond(); got != 100 {
		t.Fatalf("rate %v", got)
	}
}

func TestRedecode(t *testing.T) {
	c := Config{Format: "csv", CSVHeader: []string{"order", "qty"}}
	setDefaults(&c)
	d, err := newDecoder(&c)
	if err != nil {
		t.Fatal(err)
	}
	s := &Source{cfg: c, dec: d}
	v, err := s.Redecode([]byte("P1,3"), map[string]any{MetaTopic: "mes/x"})
	if err != nil || fmt.Sprint(v) != "map[order:P1 qty:3]" {
		t.Fatalf("Redecode = %v, %v", v, err)
	}
	if _, err := s.Redecode([]byte("P1"), nil); err == nil {
		t.Fatal("a bad line decoded")
	}
}
