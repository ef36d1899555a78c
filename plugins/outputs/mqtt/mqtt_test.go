package mqtt

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/pipeline"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func mosquitto(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("against mosquitto")
	}
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/mosquitto"); err != nil {
			t.Fatal("mosquitto is not installed: run `make tools`")
		}
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "m.conf")
	if err := os.WriteFile(conf, []byte("listener "+port+" 127.0.0.1\nallow_anonymous true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close()
			break
		}
		if i > 200 {
			t.Fatal("mosquitto does not listen")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "tcp://" + addr
}

func newSink(t *testing.T, broker string) *Sink {
	t.Helper()
	s, err := New(&Config{Broker: broker, ClientID: "t-" + fmt.Sprint(time.Now().UnixNano()), Topic: "mes/orders/{Company}/{Order}",
		QoS: 1, Timeout: time.Second, Exclude: []string{"Company"}}, pipeline.Env{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// A record is acked after the broker's acknowledgement and is then the
// topic's retained message; a record without the topic's fields is
// refused for good; a broker that is not there is a transient error.
func TestPublish(t *testing.T) {
	broker := mosquitto(t)
	s := newSink(t, broker)
	ctx := context.Background()
	if err := s.Write(ctx, []pipeline.Record{{Key: "P1", Fields: map[string]any{"Company": "USMF", "Order": "P1", "Status": "Released"}}}); err != nil {
		t.Fatal(err)
	}
	err := s.Write(ctx, []pipeline.Record{{Key: "P2", Fields: map[string]any{"Order": "P2"}}})
	if !pipeline.IsPermanent(err) {
		t.Fatalf("no Company: %v", err)
	}
	if err := s.Write(ctx, []pipeline.Record{{Key: "P3", Fields: map[string]any{"Company": "USMF", "Order": "P#"}}}); !pipeline.IsPermanent(err) {
		t.Fatalf("wildcard in the topic: %v", err)
	}
	got := make(chan paho.Message, 4)
	cl := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("sub"))
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer cl.Disconnect(100)
	cl.Subscribe("mes/orders/#", 1, func(_ paho.Client, m paho.Message) { got <- m })
	select {
	case m := <-got:
		if m.Topic() != "mes/orders/USMF/P1" || !m.Retained() || string(m.Payload()) != `{"Order":"P1","Status":"Released"}` {
			t.Fatalf("%s retained=%v %s", m.Topic(), m.Retained(), m.Payload())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no retained message")
	}
	down := newSink(t, "tcp://"+freeAddr(t))
	if err := down.Write(ctx, []pipeline.Record{{Key: "P1", Fields: map[string]any{"Company": "USMF", "Order": "P1"}}}); err == nil || pipeline.IsPermanent(err) {
		t.Fatalf("broker down: %v", err)
	}
	if st := down.Status(); st["last_error"] == nil || st["connected"] != false {
		t.Errorf("status %v", st)
	}
}

// flow test shows the PUBLISH that Write sends.
func TestPreview(t *testing.T) {
	s := newSink(t, "tcp://127.0.0.1:1")
	p, err := s.PreviewRequest(pipeline.Record{Fields: map[string]any{"Company": "USMF", "Order": "P1", "Status": "Released"}})
	if err != nil || p.Path != "mes/orders/USMF/P1" || string(p.Body) != `{"Order":"P1","Status":"Released"}` {
		t.Fatalf("%+v %v", p, err)
	}
	if _, err := s.PreviewRequest(pipeline.Record{Fields: map[string]any{"Order": "P1"}}); err == nil {
		t.Fatal("a record without Company previewed")
	}
}

func TestCheckOnline(t *testing.T) {
	broker := mosquitto(t)
	c := &Config{Broker: broker, ClientID: "gw", Topic: "t/{x}", QoS: 1, Timeout: time.Second}
	if msg, err := c.CheckOnline(context.Background()); err != nil {
		t.Fatal(err)
	} else {
		t.Log(msg)
	}
	c.Broker = "tcp://" + freeAddr(t)
	if _, err := c.CheckOnline(context.Background()); err == nil {
		t.Fatal("a broker that is not there passed")
	}
}
