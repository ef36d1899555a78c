package fooutcomes_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

// startMosquitto runs a mosquitto broker on a free loopback port for the
// test and returns its URL.
func startMosquitto(t *testing.T) string {
	t.Helper()
	bin := ""
	for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto"} {
		if path, err := exec.LookPath(p); err == nil {
			bin = path
			break
		}
	}
	if bin == "" {
		t.Fatal("mosquitto is not installed: run `make tools`")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type error\n", port)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	foemutest.WaitFor(t, 10*time.Second, "mosquitto to listen", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
	return "tcp://" + addr
}

// retained subscribes to filter and collects the messages per topic.
type retained struct {
	mu   sync.Mutex
	last map[string]map[string]any
	n    map[string]int
}

func subscribe(t *testing.T, broker, filter string) *retained {
	t.Helper()
	r := &retained{last: map[string]map[string]any{}, n: map[string]int{}}
	cl := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("test-%d", time.Now().UnixNano())))
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	tok := cl.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		var v map[string]any
		_ = json.Unmarshal(m.Payload(), &v)
		v["_retained"] = m.Retained()
		r.mu.Lock()
		r.last[m.Topic()] = v
		r.n[m.Topic()]++
		r.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return r
}

func (r *retained) get(topic string) map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last[topic]
}
