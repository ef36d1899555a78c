package mqtt

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// TestMQTTCrashHelper is not a test: TestIntegrationMosquittoSIGKILL runs
// the test binary again with PLANTGATE_MQTT_CRASH_HELPER set, and this
// function then runs a gateway (queue, router, mqtt source), printing
// "READY" once subscribed and "COUNT n" with the stream's record count
// every 20ms, until it is killed.
func TestMQTTCrashHelper(t *testing.T) {
	path := os.Getenv("PLANTGATE_MQTT_CRASH_HELPER")
	if path == "" {
		t.Skip("helper process for TestIntegrationMosquittoSIGKILL")
	}
	store, err := queue.Open(path, queue.Options{OpenTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	router := flow.NewRouter(store, testFlows(t, "payload.msg_id"), zerolog.Nop(), nil)
	cfg := Config{Broker: os.Getenv("PLANTGATE_MQTT_BROKER"), ClientID: "pg-crash", Topics: []Topic{{Filter: "crash/#"}}, QoS: 1,
		ReconnectInitial: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond}
	src, err := New(&cfg, pipeline.Env{Name: testSource, Log: zerolog.New(os.Stderr).Level(zerolog.WarnLevel)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "new:", err)
		os.Exit(3)
	}
	go func() {
		if err := src.Run(context.Background(), router.Emitter(testSource)); err != nil {
			fmt.Fprintln(os.Stderr, "run:", err)
			os.Exit(4)
		}
	}()
	ready := false
	for tk := time.NewTicker(20 * time.Millisecond); ; <-tk.C {
		if !ready {
			st := src.Status()
			if subs, _ := st["subscriptions"].(map[string]int); len(subs) == 1 {
				fmt.Println("READY")
				ready = true
			}
		}
		stats, err := store.Stats()
		if err != nil {
			fmt.Fprintln(os.Stderr, "stats:", err)
			os.Exit(5)
		}
		fmt.Println("COUNT", stats.Records)
	}
}

// crashChild is one run of the helper process.
type crashChild struct {
	cmd   *exec.Cmd
	lines chan string
	count int64
}

func startCrashChild(t *testing.T, path, broker string) *crashChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMQTTCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PLANTGATE_MQTT_CRASH_HELPER="+path, "PLANTGATE_MQTT_BROKER="+broker)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &crashChild{cmd: cmd, lines: make(chan string, 64)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l := sc.Text()
			if !strings.HasPrefix(l, "COUNT ") {
				c.lines <- l
				continue
			}
			select {
			case c.lines <- l:
			default: // the parent only needs the latest counts
			}
		}
		close(c.lines)
	}()
	return c
}

// waitFor reads the child's lines until cond holds for one of them.
func (c *crashChild) waitFor(t *testing.T, timeout time.Duration, what string, cond func(line string) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("gateway process exited while waiting for %s", what)
			}
			if n, ok := strings.CutPrefix(l, "COUNT "); ok {
				c.count, _ = strconv.ParseInt(n, 10, 64)
			}
			if cond(l) {
				return
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s (last count %d)", what, c.count)
		}
	}
}

func (c *crashChild) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	_ = c.cmd.Wait()
}

// TestIntegrationMosquittoSIGKILL publishes 10,000 QoS 1 messages while
// the gateway process is SIGKILLed mid-stream and started again: the queue
// file must hold every message exactly once.
func TestIntegrationMosquittoSIGKILL(t *testing.T) {
	if os.Getenv("PLANTGATE_MQTT_CRASH_HELPER") != "" {
		t.Skip("inside the helper")
	}
	const total = 10_000
	m := startMosquitto(t)
	path := filepath.Join(t.TempDir(), "crash.db")

	child := startCrashChild(t, path, m.url())
	child.waitFor(t, 30*time.Second, "the gateway to subscribe", func(l string) bool { return l == "READY" })
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		newPublisher(t, m.url(), "pub-crash").send("crash/line1", 1, "c", 0, total)
	}()
	child.waitFor(t, 60*time.Second, "3000 records", func(string) bool { return child.count >= 3000 })
	child.kill()
	t.Logf("killed the gateway with %d records committed", child.count)

	child = startCrashChild(t, path, m.url())
	defer child.kill()
	child.waitFor(t, 90*time.Second, fmt.Sprintf("%d records", total), func(string) bool { return child.count >= total })
	<-pubDone
	child.kill()

	s := openStore(t, path, queue.Options{})
	defer s.Close()
	if err := s.Check(); err != nil {
		t.Fatalf("queue check: %v", err)
	}
	ids, n := streamIDs(t, s)
	if n != total || len(ids) != total {
		t.Fatalf("queue holds %d records with %d distinct ids, want %d each", n, len(ids), total)
	}
	for i := range total {
		if ids[fmt.Sprintf("c-%d", i)] != 1 {
			t.Fatalf("message c-%d is in the queue %d times", i, ids[fmt.Sprintf("c-%d", i)])
		}
	}
	if dead, err := s.ListDead(testDead, 0, 0); err == nil && len(dead) > 0 {
		t.Fatalf("%d dead letters, first: %s", len(dead), dead[0].Reason)
	}
}
