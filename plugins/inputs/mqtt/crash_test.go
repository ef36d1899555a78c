package mqtt

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
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
// every 20ms, until it is killed. The power-cut tests run it too, with
// PLANTGATE_MQTT_CRASH_CLIENT (the client id, default pg-crash) and
// PLANTGATE_MQTT_CRASH_NOSYNC=1 (open the queue with NoSync: the control).
func TestMQTTCrashHelper(t *testing.T) {
	path := os.Getenv("PLANTGATE_MQTT_CRASH_HELPER")
	if path == "" {
		t.Skip("helper process for TestIntegrationMosquittoSIGKILL")
	}
	store, err := queue.Open(path, queue.Options{OpenTimeout: 5 * time.Second, NoSync: os.Getenv("PLANTGATE_MQTT_CRASH_NOSYNC") == "1"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	router := flow.NewRouter(store, testFlows(t, "payload.msg_id"), zerolog.Nop(), nil)
	clientID := os.Getenv("PLANTGATE_MQTT_CRASH_CLIENT")
	if clientID == "" {
		clientID = "pg-crash"
	}
	cfg := Config{Broker: os.Getenv("PLANTGATE_MQTT_BROKER"), ClientID: clientID, Topics: []Topic{{Filter: "crash/#"}}, QoS: 1,
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

// startCrashChild starts the helper process on the queue at path; env
// adds variables (PLANTGATE_MQTT_CRASH_CLIENT, PLANTGATE_MQTT_CRASH_NOSYNC).
func startCrashChild(t *testing.T, path, broker string, env ...string) *crashChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMQTTCrashHelper$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), "PLANTGATE_MQTT_CRASH_HELPER="+path, "PLANTGATE_MQTT_BROKER="+broker), env...)
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

// kill SIGKILLs the child and waits for it to exit, reading the counts
// it printed before it died.
func (c *crashChild) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	for l := range c.lines {
		if n, ok := strings.CutPrefix(l, "COUNT "); ok {
			c.count, _ = strconv.ParseInt(n, 10, 64)
		}
	}
	_ = c.cmd.Wait()
}

// killAtRandom lets a started child subscribe, calls started (which
// begins publishing), waits a random time in [minDelay, maxDelay) and
// SIGKILLs the child. It returns the record count the child found at its
// start and the last count it reported before it died.
func killAtRandom(t *testing.T, c *crashChild, rng *rand.Rand, minDelay, maxDelay time.Duration, started func()) (base, last int64) {
	t.Helper()
	c.waitFor(t, 30*time.Second, "the gateway to subscribe", func(l string) bool { return l == "READY" })
	c.waitFor(t, 10*time.Second, "the gateway's first count", func(l string) bool { return strings.HasPrefix(l, "COUNT ") })
	base = c.count
	started()
	time.Sleep(minDelay + time.Duration(rng.Int64N(int64(maxDelay-minDelay))))
	c.kill()
	return base, c.count
}

// pacedSend publishes messages from..to-1 of prefix in batches of 50, each
// acknowledged by the broker before a short pause, so that ingest is
// spread over some 100-200ms and a kill at a random moment falls in it.
func (p *publisher) pacedSend(topic, prefix string, from, to int) {
	for i := from; i < to; i += 50 {
		p.send(topic, 1, prefix, i, min(i+50, to))
		time.Sleep(5 * time.Millisecond)
	}
}

// crashKills is how many times TestIntegrationMosquittoSIGKILL kills the
// gateway: 10, or 60 under PLANTGATE_LONG=1.
func crashKills() int {
	if os.Getenv("PLANTGATE_LONG") == "1" {
		return 60
	}
	return 10
}

// TestIntegrationMosquittoSIGKILL publishes QoS 1 messages in rounds
// while the gateway process is SIGKILLed at random moments (10 times, 60
// under PLANTGATE_LONG=1) and started again. After each kill the queue
// must open, pass Check, hold no message twice and hold every record the
// gateway had reported committed; at the end, after a last run drained the
// broker, it must hold every message exactly once.
func TestIntegrationMosquittoSIGKILL(t *testing.T) {
	if os.Getenv("PLANTGATE_MQTT_CRASH_HELPER") != "" {
		t.Skip("inside the helper")
	}
	const perKill = 1000
	kills := crashKills()
	total := kills * perKill
	m := startMosquitto(t)
	path := filepath.Join(t.TempDir(), "crash.db")
	pub := newPublisher(t, m.url(), "pub-crash")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 17))

	for k := 0; k < kills; k++ {
		child := startCrashChild(t, path, m.url())
		pubDone := make(chan struct{})
		base, last := killAtRandom(t, child, rng, 0, 250*time.Millisecond, func() {
			go func() {
				defer close(pubDone)
				pub.pacedSend("crash/line1", "c", k*perKill, (k+1)*perKill)
			}()
		})
		<-pubDone // the broker holds what the dead gateway did not take
		s := openStore(t, path, queue.Options{})
		if err := s.Check(); err != nil {
			t.Fatalf("kill %d: queue check: %v", k, err)
		}
		ids, n := streamIDs(t, s)
		_ = s.Close()
		if int64(n) < last {
			t.Fatalf("kill %d: the gateway reported %d records committed, the queue holds %d", k, last, n)
		}
		if len(ids) != n {
			t.Fatalf("kill %d: %d records but %d distinct ids", k, n, len(ids))
		}
		t.Logf("kill %d: %d messages published, the gateway started with %d records and was killed after reporting %d; the queue holds %d",
			k, (k+1)*perKill, base, last, n)
	}

	child := startCrashChild(t, path, m.url())
	defer child.kill()
	child.waitFor(t, 90*time.Second, fmt.Sprintf("%d records", total), func(string) bool { return child.count >= int64(total) })
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
	t.Logf("%d messages, %d SIGKILLs at random moments: every message in the queue exactly once", total, kills)
}
