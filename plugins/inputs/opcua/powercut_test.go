package opcua

import (
	"bufio"
	"context"
	"flag"
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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plantgate/plantgate/internal/opcuasim"
	"github.com/plantgate/plantgate/internal/queue"
	"github.com/plantgate/plantgate/internal/testutil/lazyfs"
)

var powerCutCuts = flag.Int("powercut.cuts", 0, "power cuts in TestOPCUAPowerCutCountsEachPartOnce (0: $PLANTGATE_POWERCUT_CUTS, or 6)")

// TestOPCUAPowerCutHelper is not a test: the power-cut test runs the test
// binary again with PLANTGATE_OPCUA_POWERCUT_HELPER set to a directory on
// a LazyFS mount and PLANTGATE_OPCUA_POWERCUT_ENDPOINT to a server. It runs
// a gateway (queue and PKI in that directory) counting the server's good
// counter, printing "V value" with the last good value it saw every 50 ms,
// until it is killed.
func TestOPCUAPowerCutHelper(t *testing.T) {
	dir := os.Getenv("PLANTGATE_OPCUA_POWERCUT_HELPER")
	if dir == "" {
		t.Skip("helper process for TestOPCUAPowerCutCountsEachPartOnce")
	}
	ep := os.Getenv("PLANTGATE_OPCUA_POWERCUT_ENDPOINT")
	cfg, flows := parseConfig(t, "endpoint: "+ep+"\nsecurity: {policy: None, mode: None}\n"+fastTimers+lineNodes(opcuasim.DefaultNamespace))
	g := &gateway{t: t, path: filepath.Join(dir, "queue.db"), data: dir, cfg: cfg, flows: flows, reg: prometheus.NewRegistry()}
	g.open()
	g.start()
	for {
		time.Sleep(50 * time.Millisecond)
		if v, ok := goodValue(g).(uint32); ok {
			fmt.Printf("V %d\n", v)
		}
	}
}

// TestOPCUAPowerCutCountsEachPartOnce runs a gateway process with its
// queue on LazyFS against a counter that rises every 5 ms, and cuts the
// power at a random moment, several times. At the end the events in the
// queue are numbered 1..N without a hole or a repeat, and the parts they
// report add up to the counter's real increase since the first baseline:
// the counter state is committed with its events, so no cut counts a
// part twice or loses one.
func TestOPCUAPowerCutCountsEachPartOnce(t *testing.T) {
	lazyfs.Available(t)
	cuts := lazyfs.Cuts(*powerCutCuts, 6)
	fs := lazyfs.Mount(t)
	sim := startSim(t, opcuasim.Options{})
	sim.Set(opcuasim.Good, uint32(1000))
	stop := make(chan struct{})
	final := make(chan uint32, 1)
	go func() {
		v := uint32(1000)
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				final <- v
				return
			case <-tk.C:
				v++
				sim.Set(opcuasim.Good, v)
			}
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	dir := filepath.Join(fs.Dir(), "gw")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < cuts; k++ {
		h := startHelper(t, dir, sim.Endpoint())
		h.waitValue(t, 0)
		time.Sleep(time.Duration(100+rng.IntN(700)) * time.Millisecond)
		h.kill()
		fs.Cut()
		fs.Remount()
	}
	close(stop)
	last := <-final
	h := startHelper(t, dir, sim.Endpoint())
	h.waitValue(t, last)
	time.Sleep(300 * time.Millisecond) // the commit after the value
	h.kill()

	s, err := queue.Open(filepath.Join(dir, "queue.db"), queue.Options{OpenTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs, err := s.List(eventStream, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sum, first int64
	seen := map[int64]bool{}
	var maxSeq int64
	for _, r := range recs {
		if r.Fields["rule"] != "good-parts" {
			continue
		}
		seq := toInt(r.Fields["seq"])
		if seen[seq] {
			t.Fatalf("event %d is in the queue twice", seq)
		}
		seen[seq] = true
		if seq == 1 {
			first = toInt(r.Fields["previous"])
		}
		maxSeq = max(maxSeq, seq)
		sum += toInt(r.Fields["increase"])
	}
	for i := int64(1); i <= maxSeq; i++ {
		if !seen[i] {
			t.Fatalf("event %d of %d is missing", i, maxSeq)
		}
	}
	if first == 0 {
		t.Fatal("no first event")
	}
	t.Logf("%d cuts, %d events, %d parts counted from %d to %d", cuts, maxSeq, sum, first, last)
	if sum != int64(last)-first {
		t.Fatalf("the events report %d parts; the counter rose by %d since the first baseline %d", sum, int64(last)-first, first)
	}
}

type helper struct {
	cmd  *exec.Cmd
	vals chan uint32
}

func startHelper(t *testing.T, dir, endpoint string) *helper {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), os.Args[0], "-test.run=^TestOPCUAPowerCutHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PLANTGATE_OPCUA_POWERCUT_HELPER="+dir, "PLANTGATE_OPCUA_POWERCUT_ENDPOINT="+endpoint)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, vals: make(chan uint32, 1000)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "V "); ok {
				n, _ := strconv.ParseUint(v, 10, 32)
				select {
				case h.vals <- uint32(n):
				default:
				}
			}
		}
		close(h.vals)
	}()
	t.Cleanup(h.kill)
	return h
}

// waitValue waits until the helper has seen a value of at least v.
func (h *helper) waitValue(t *testing.T, v uint32) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case got, ok := <-h.vals:
			if !ok {
				t.Fatal("the helper exited")
			}
			if got >= v {
				return
			}
		case <-deadline:
			t.Fatalf("the helper did not see value %d within 20s", v)
		}
	}
}

func (h *helper) kill() {
	if h.cmd.Process != nil {
		_ = h.cmd.Process.Signal(syscall.SIGKILL)
		_ = h.cmd.Wait()
	}
}
