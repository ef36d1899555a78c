package mqtt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// embeddedConfig is an embedded broker on a free loopback port with user
// "mes" (password "s3cret") allowed to publish mes/# and subscribe fwd/#.
func embeddedConfig() Config {
	return Config{Embedded: &Embedded{Listen: "127.0.0.1:0", Users: []User{{
		Username: "mes", Password: logging.NewSecret("s3cret"),
		Allow: ACL{Publish: []string{"mes/#", "fwd/#"}, Subscribe: []string{"fwd/#"}},
	}}}}
}

// runSource runs src with em until the test ends.
func runSource(t *testing.T, src *Source, em pipeline.Emitter) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, em) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Run did not return within 20s")
		}
	})
}

func newEmbedded(t *testing.T, cfg Config, em pipeline.Emitter) (*Source, string) {
	t.Helper()
	src, err := New(&cfg, pipeline.Env{Name: testSource, Log: testLogger(t), Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	runSource(t, src, em)
	eventually(t, 5*time.Second, "the embedded broker to listen", func() bool { return src.Status()["connected"] == true })
	addr, _ := src.Status()["listen"].(string)
	return src, addr
}

func withUser(user, pass string) func(*paho.ClientOptions) {
	return func(o *paho.ClientOptions) { o.SetUsername(user).SetPassword(pass) }
}

// TestEmbeddedPubackAfterCommit proves that a publisher's PUBACK (PUBREC
// for QoS 2) never arrives before Emit returned, that is, before the
// record is committed.
func TestEmbeddedPubackAfterCommit(t *testing.T) {
	em := newBlockingEmitter()
	em.block()
	src, addr := newEmbedded(t, embeddedConfig(), em)
	p := newPublisher(t, "tcp://"+addr, "pub-ack", withUser("mes", "s3cret"))

	// At the wire: no PUBACK while Emit waits, the PUBACK right after.
	raw := dialRaw(t, addr, "raw-ack", "mes", "s3cret")
	raw.publish("mes/line1/start", 1, false, payload("raw", 1))
	<-em.entered
	raw.expectNothing(300*time.Millisecond, "PUBACK before the commit")
	em.unblock()
	raw.expectPuback(1)
	if n := len(em.committed()); n != 1 {
		t.Fatalf("%d messages committed", n)
	}

	for _, qos := range []byte{1, 2} {
		em.block()
		tok := p.c.Publish("mes/line1/finished", qos, false, payload("held", int(qos)))
		<-em.entered
		if tok.WaitTimeout(300 * time.Millisecond) {
			t.Fatalf("qos %d: the publisher was acknowledged while Emit had not returned (err %v)", qos, tok.Error())
		}
		if n := len(em.committed()); n != int(qos) {
			t.Fatalf("qos %d: %d messages committed", qos, n)
		}
		em.unblock()
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("qos %d: no acknowledgement after the commit: %v", qos, tok.Error())
		}
	}

	// Many publishes in flight: each acknowledgement must find its message
	// already committed.
	const n = 300
	toks := make([]paho.Token, n)
	for i := range n {
		toks[i] = p.c.Publish("mes/line1/consumption", byte(1+i%2), false, payload("many", i))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
		want := fmt.Sprintf(`"msg_id":"many-%d"`, i)
		found := false
		for _, m := range em.committed() {
			if strings.Contains(string(m.Raw), want) {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("publish %d acknowledged before it was committed", i)
		}
	}
	st := src.Status()
	if st["received"] != int64(n+3) || st["acked"] != int64(n+3) || st["mode"] != "embedded" {
		t.Fatalf("status %v", st)
	}
	m := em.committed()[1]
	if m.Meta[MetaClientID] != "pub-ack" || m.Meta[MetaUsername] != "mes" || m.Meta[MetaBrokerTime] == nil || m.Meta[MetaQoS] != 1 {
		t.Fatalf("meta %v", m.Meta)
	}
}

// TestEmbeddedEmitFailure: a publish whose Emit fails is not acknowledged
// and the client is disconnected, so it sends the message again; once
// Emit works the resent message is acknowledged.
func TestEmbeddedEmitFailure(t *testing.T) {
	em := newBlockingEmitter()
	em.fail = errors.New("disk on fire")
	_, addr := newEmbedded(t, embeddedConfig(), em)
	c := dialRaw(t, addr, "raw-fail", "mes", "s3cret")
	c.publish("mes/x", 7, false, payload("f", 1))
	c.expectClosed()
	if got := em.committed(); len(got) != 0 {
		t.Fatalf("%d messages committed", len(got))
	}
	em.mu.Lock()
	em.fail = nil
	em.mu.Unlock()
	c = dialRaw(t, addr, "raw-fail", "mes", "s3cret")
	c.publish("mes/x", 7, true, payload("f", 1))
	c.expectPuback(7)
	if got := em.committed(); len(got) != 1 || got[0].Meta[MetaDuplicate] != true {
		t.Fatalf("committed %v", got)
	}
}

// TestEmbeddedAuthAndACL checks passwords, anonymous access and per-user
// topic permissions.
func TestEmbeddedAuthAndACL(t *testing.T) {
	em := newBlockingEmitter()
	cfg := embeddedConfig()
	cfg.Topics = []Topic{{Filter: "mes/#"}}
	src, addr := newEmbedded(t, cfg, em)
	url := "tcp://" + addr
	connect := func(id string, tweak ...func(*paho.ClientOptions)) error {
		o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
		for _, f := range tweak {
			f(o)
		}
		c := paho.NewClient(o)
		tok := c.Connect()
		tok.WaitTimeout(10 * time.Second)
		if tok.Error() == nil {
			c.Disconnect(0)
		}
		return tok.Error()
	}
	if err := connect("anon"); err == nil {
		t.Fatal("anonymous client connected")
	}
	if err := connect("bad", withUser("mes", "wrong")); err == nil {
		t.Fatal("wrong password accepted")
	}
	if err := connect("nobody", withUser("nobody", "s3cret")); err == nil {
		t.Fatal("unknown user accepted")
	}
	if err := connect("good", withUser("mes", "s3cret")); err != nil {
		t.Fatalf("good credentials refused: %v", err)
	}

	p := newPublisher(t, url, "pub-acl", withUser("mes", "s3cret"))
	sub := p.c.Subscribe("mes/#", 1, nil)
	if !sub.WaitTimeout(5*time.Second) || sub.Error() != nil {
		t.Fatal(sub.Error())
	}
	if q := sub.(*paho.SubscribeToken).Result()["mes/#"]; q != 0x80 {
		t.Fatalf("subscription outside the ACL granted qos %d", q)
	}
	sub = p.c.Subscribe("fwd/line1/+", 1, nil)
	if !sub.WaitTimeout(5*time.Second) || sub.(*paho.SubscribeToken).Result()["fwd/line1/+"] != 1 {
		t.Fatalf("subscription inside the ACL refused: %v", sub.(*paho.SubscribeToken).Result())
	}
	if tok := p.c.Publish("mes/line1/x", 1, false, payload("ok", 1)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	// A publish outside the ACL: an MQTT 3.1.1 client is disconnected.
	p.c.Publish("other/x", 1, false, payload("denied", 1))
	eventually(t, 5*time.Second, "the client to be disconnected", func() bool { return !p.c.IsConnectionOpen() })
	got := em.committed()
	if len(got) != 1 || !strings.Contains(string(got[0].Raw), `"ok-1"`) {
		t.Fatalf("committed %d messages: %v", len(got), got)
	}
	if f := testutilValue(src.m.authFailures); f != 3 {
		t.Fatalf("auth failures %v, want 3", f)
	}
}

// TestEmbeddedRefusesUningestedTopics: a QoS 1/2 publish on a topic
// outside the source's topics (here fwd/#, which the user's ACL allows)
// would not be stored, so it must never be acknowledged: MQTT 5 gets
// reason 0x87 "not authorized" in its PUBACK/PUBREC, MQTT 3.1.1 is
// disconnected without a PUBACK. Ingested topics are still acknowledged
// after the commit, and QoS 0 on other topics is still passed on to
// subscribers.
func TestEmbeddedRefusesUningestedTopics(t *testing.T) {
	em := newBlockingEmitter()
	cfg := embeddedConfig()
	cfg.Topics = []Topic{{Filter: "mes/#"}}
	src, addr := newEmbedded(t, cfg, em)

	// MQTT 3.1.1: no PUBACK, the connection is closed.
	v3 := dialRaw(t, addr, "raw-v3", "mes", "s3cret")
	v3.publish("fwd/line1/x", 1, false, payload("fwd3", 1))
	v3.expectClosed()

	// MQTT 5: refused per message, the connection stays up.
	v5 := dialRaw5(t, addr, "raw-v5", "mes", "s3cret")
	v5.publish5("fwd/line1/x", 1, 2, payload("fwd5", 1))
	if rc := v5.expectAck5(0x40, 2); rc != 0x87 {
		t.Fatalf("QoS 1 outside the topics: PUBACK reason %#x, want 0x87", rc)
	}
	v5.publish5("fwd/line1/x", 2, 3, payload("fwd5", 2))
	if rc := v5.expectAck5(0x50, 3); rc != 0x87 {
		t.Fatalf("QoS 2 outside the topics: PUBREC reason %#x, want 0x87", rc)
	}
	v5.publish5("mes/line1/start", 1, 4, payload("mes5", 1))
	if rc := v5.expectAck5(0x40, 4); rc != 0 {
		t.Fatalf("ingested topic: PUBACK reason %#x, want 0", rc)
	}

	// QoS 0 promises nothing and is passed on to subscribers.
	got := make(chan string, 1)
	sub := newPublisher(t, "tcp://"+addr, "sub-fwd", withUser("mes", "s3cret"))
	tok := sub.c.Subscribe("fwd/#", 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	v5.publish5("fwd/line1/q0", 0, 0, payload("fwd5", 3))
	select {
	case topic := <-got:
		if topic != "fwd/line1/q0" {
			t.Fatalf("subscriber got %q", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("QoS 0 publish outside the topics was not passed on")
	}

	c := em.committed()
	if len(c) != 1 || !strings.Contains(string(c[0].Raw), `"mes5-1"`) {
		t.Fatalf("committed %d messages: %v", len(c), c)
	}
	if n := testutilValue(src.m.aclDenials); n != 3 {
		t.Fatalf("acl denials %v, want 3", n)
	}
}

// TestEmbeddedQueueEndToEnd runs the embedded broker into a real queue,
// with a bad payload dead-lettered and redeliveries deduplicated by id.
func TestEmbeddedQueueEndToEnd(t *testing.T) {
	cfg := embeddedConfig()
	g := newGateway(t, filepath.Join(t.TempDir(), "q.db"), cfg, queue.Options{}).start()
	eventually(t, 5*time.Second, "the embedded broker to listen", func() bool { return g.src.Status()["connected"] == true })
	addr, _ := g.src.Status()["listen"].(string)
	p := newPublisher(t, "tcp://"+addr, "pub-e2e", withUser("mes", "s3cret"))
	p.send("mes/a", 1, "e", 0, 500)
	p.send("mes/a", 1, "e", 0, 100) // sent again, as after a publisher crash
	if tok := p.c.Publish("mes/a", 1, false, []byte("not json")); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	ids, n := g.ids()
	if n != 500 || len(ids) != 500 {
		t.Fatalf("%d records, %d distinct ids", n, len(ids))
	}
	dead, err := g.store.ListDead(testDead, 0, 0)
	if err != nil || len(dead) != 1 || !strings.HasPrefix(dead[0].Reason, "decode: json:") || string(dead[0].Record.Raw) != "not json" {
		t.Fatalf("dead letters %v, %v", dead, err)
	}
	if st := g.src.Status(); st["redeliveries"] != int64(100) {
		t.Fatalf("redeliveries %v, want 100", st["redeliveries"])
	}
}

// TestEmbeddedTLSWithClientMode chains the two modes over mutual TLS: a
// client-mode source subscribes on an embedded broker that requires client
// certificates.
func TestEmbeddedTLSWithClientMode(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	cfg := embeddedConfig()
	// fwd/# is ingested too: the embedded broker acknowledges only what
	// it stores, and passes it on to the client-mode subscriber.
	cfg.Topics = []Topic{{Filter: "mes/#"}, {Filter: "fwd/#"}}
	cfg.Embedded.TLS = &ServerTLS{CertFile: pki.serverCert, KeyFile: pki.serverKey, ClientCAFile: pki.ca}
	_, addr := newEmbedded(t, cfg, newBlockingEmitter())

	ccfg := Config{Broker: "tls://" + addr, ClientID: "pg-tls", Username: "mes", Password: logging.NewSecret("s3cret"),
		Topics: []Topic{{Filter: "fwd/#"}}, ReconnectInitial: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		TLS: ClientTLS{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}}
	g := newGateway(t, filepath.Join(dir, "q.db"), ccfg, queue.Options{})
	if err := g.src.Probe(t.Context()); err != nil {
		t.Fatalf("probe before run: %v", err)
	}
	g.start()
	g.waitSubscribed()

	tlsPub := func(o *paho.ClientOptions) {
		tc, err := clientTLS(&ccfg)
		if err != nil {
			t.Fatal(err)
		}
		o.SetTLSConfig(tc)
	}
	newPublisher(t, "tls://"+addr, "pub-tls", withUser("mes", "s3cret"), tlsPub).send("fwd/line1", 1, "tls", 0, 200)
	eventually(t, 10*time.Second, "200 records over TLS", func() bool { return g.count() == 200 })

	// Without a client certificate the handshake fails.
	noCert := ccfg
	noCert.TLS.CertFile, noCert.TLS.KeyFile = "", ""
	src, err := New(&noCert, pipeline.Env{Name: "nocert", Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Probe(t.Context()); err == nil {
		// TLS 1.3 reports a missing client certificate only after the
		// handshake; a connect must still fail.
		o := paho.NewClientOptions().AddBroker("tls://" + addr).SetClientID("nocert").SetTLSConfig(src.tls).
			SetUsername("mes").SetPassword("s3cret").SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
		tok := paho.NewClient(o).Connect()
		if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
			t.Fatal("connected without a client certificate")
		}
	}
}

type testPKI struct{ ca, serverCert, serverKey, clientCert, clientKey string }

// newTestPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate as PEM files into dir.
func newTestPKI(t *testing.T, dir string) testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "plantgate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		return write(name+".pem", "CERTIFICATE", der), write(name+".key", "EC PRIVATE KEY", kb)
	}
	p := testPKI{ca: write("ca.pem", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}
