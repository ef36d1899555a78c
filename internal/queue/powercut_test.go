package queue

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/testutil/lazyfs"
)

var powerCutCuts = flag.Int("powercut.cuts", 0, "power cuts in TestPowerCutQueue (0: $PLANTGATE_POWERCUT_CUTS, or 24)")

// powerCuts is the number of cuts (lazyfs.Cuts).
func powerCuts(def int) int { return lazyfs.Cuts(*powerCutCuts, def) }

// TestPowerCutHelper is not a test: the power-cut tests run the test binary
// again with PLANTGATE_QUEUE_POWERCUT_HELPER set to a queue path on a
// LazyFS mount, and this function then appends (8 concurrent appenders,
// so commits are shared) and acks, printing "W id" after each Append
// returned, "L id" before an Ack starts and "A id" after it returned,
// until it is killed. PLANTGATE_QUEUE_POWERCUT_NOSYNC=1 opens the queue
// with NoSync (the control).
func TestPowerCutHelper(t *testing.T) {
	path := os.Getenv("PLANTGATE_QUEUE_POWERCUT_HELPER")
	if path == "" {
		t.Skip("helper process for TestPowerCutQueue")
	}
	inc := os.Getenv("PLANTGATE_QUEUE_POWERCUT_INCARNATION")
	s, err := Open(path, Options{OpenTimeout: 5 * time.Second, NoSync: os.Getenv("PLANTGATE_QUEUE_POWERCUT_NOSYNC") == "1"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var outMu sync.Mutex
	say := func(kind string, ids []string) {
		var b strings.Builder
		for _, id := range ids {
			b.WriteString(kind + " " + id + "\n")
		}
		outMu.Lock()
		_, _ = os.Stdout.WriteString(b.String()) // unbuffered: in the pipe before the next operation
		outMu.Unlock()
	}
	ctx := context.Background()
	for w := 0; w < 8; w++ {
		go func(w int) {
			for i := 0; ; i++ {
				n := 1 + i%5
				entries := make([]Entry, n)
				ids := make([]string, n)
				for j := range entries {
					ids[j] = fmt.Sprintf("%s-%d-%d-%d", inc, w, i, j)
					entries[j] = Entry{Stream: "flow.sink", Record: pipeline.Record{Key: fmt.Sprint(w), ID: ids[j],
						Fields: map[string]any{"i": i, "pad": strings.Repeat("p", 200)}}}
				}
				if _, err := s.Append(ctx, entries); err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(3)
				}
				say("W", ids)
			}
		}(w)
	}
	for {
		recs, err := s.Lease("flow.sink", 50, -1)
		if err != nil {
			fmt.Fprintln(os.Stderr, "lease:", err)
			os.Exit(4)
		}
		if len(recs) == 0 {
			select {
			case <-s.Wait("flow.sink"):
			case <-time.After(5 * time.Millisecond):
			}
			continue
		}
		seqs := make([]uint64, len(recs))
		ids := make([]string, len(recs))
		for i, r := range recs {
			seqs[i], ids[i] = r.Seq, r.ID
		}
		// A cut during Ack may or may not keep it: these records may
		// legitimately be there or not afterwards.
		say("L", ids)
		if err := s.Ack(ctx, "flow.sink", seqs); err != nil {
			fmt.Fprintln(os.Stderr, "ack:", err)
			os.Exit(5)
		}
		say("A", ids)
		// Lag behind the appenders, so that a backlog of appended records
		// is pending when the power goes.
		time.Sleep(2 * time.Millisecond)
	}
}

// TestPowerCutVerifyHelper is not a test: the power-cut tests run it (with
// PLANTGATE_QUEUE_POWERCUT_VERIFY set to the queue path) after each cut to
// reopen the queue as a restarted gateway would, Check it and print "R id"
// for every record of the stream, then "OK". It runs in its own process
// because bbolt may panic, even in a goroutine of its own, on a file a cut
// has corrupted (which the NoSync control produces).
func TestPowerCutVerifyHelper(t *testing.T) {
	path := os.Getenv("PLANTGATE_QUEUE_POWERCUT_VERIFY")
	if path == "" {
		t.Skip("helper process for TestPowerCutQueue")
	}
	fail := func(what string, err error) {
		fmt.Printf("ERR %s: %s\n", what, strings.ReplaceAll(err.Error(), "\n", "; "))
		os.Exit(1)
	}
	s, err := Open(path, Options{OpenTimeout: 5 * time.Second})
	if err != nil {
		fail("open", err)
	}
	if err := s.Check(); err != nil {
		fail("check", err)
	}
	recs, err := s.List("flow.sink", 0, 0)
	if err != nil && !errors.Is(err, ErrUnknownStream) {
		fail("list", err)
	}
	w := bufio.NewWriter(os.Stdout)
	for _, r := range recs {
		fmt.Fprintf(w, "R %s\n", r.ID)
	}
	fmt.Fprintln(w, "OK")
	_ = w.Flush()
	if err := s.Close(); err != nil {
		fail("close", err)
	}
	os.Exit(0)
}

// cutLedger is what the writer confirmed over its incarnations.
type cutLedger struct {
	appended, acked, acking map[string]bool
}

func newCutLedger() *cutLedger {
	return &cutLedger{appended: map[string]bool{}, acked: map[string]bool{}, acking: map[string]bool{}}
}

// note records one line of the writer: "W id" (Append returned), "L id"
// (Ack started), "A id" (Ack returned).
func (l *cutLedger) note(line string) {
	kind, id, ok := strings.Cut(line, " ")
	if !ok {
		return
	}
	switch kind {
	case "W":
		l.appended[id] = true
	case "L":
		l.acking[id] = true
	case "A":
		l.acked[id] = true
	}
}

// cutOutcome is what one cut did to the queue.
type cutOutcome struct {
	broken  error    // the queue did not open or failed Check
	lost    []string // appended (Append returned), never acked, gone
	back    []string // acked (Ack returned), present again
	twice   []string // present more than once
	present int
}

func (o cutOutcome) bad() bool {
	return o.broken != nil || len(o.lost) > 0 || len(o.back) > 0 || len(o.twice) > 0
}

func (o cutOutcome) String() string {
	if o.broken != nil {
		return "queue unusable after the cut: " + o.broken.Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d records present, %d appended and never acked but gone, %d acked but back, %d present twice",
		o.present, len(o.lost), len(o.back), len(o.twice))
	for _, l := range []struct {
		what string
		ids  []string
	}{{"gone", o.lost}, {"back", o.back}, {"twice", o.twice}} {
		if len(l.ids) > 0 {
			fmt.Fprintf(&b, "; first %s: %s", l.what, strings.Join(l.ids[:min(5, len(l.ids))], " "))
		}
	}
	return b.String()
}

// runUntilKilled starts the writer on path, lets it confirm at least
// minLines plus a random number of operations, waits a random while
// longer, SIGKILLs it and waits for it to exit, recording every
// confirmation it made before it died.
func runUntilKilled(t *testing.T, path string, inc int, nosync bool, rng *rand.Rand, minLines int, l *cutLedger) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPowerCutHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PLANTGATE_QUEUE_POWERCUT_HELPER="+path, fmt.Sprintf("PLANTGATE_QUEUE_POWERCUT_INCARNATION=%d", inc))
	if nosync {
		cmd.Env = append(cmd.Env, "PLANTGATE_QUEUE_POWERCUT_NOSYNC=1")
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 4096)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	seen := 0
	// Mostly short runs (a cut soon after the restart, while the file is
	// still growing), some long ones.
	want := minLines + rng.IntN(1000)
	if rng.IntN(4) == 0 {
		want += rng.IntN(10_000)
	}
	deadline := time.After(15 * time.Second)
progress:
	for seen < want {
		select {
		case ln, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("writer %d exited early: %s", inc, stderr.String())
			}
			l.note(ln)
			seen++
		case <-deadline:
			break progress
		}
	}
	time.Sleep(time.Duration(rng.IntN(30_000)) * time.Microsecond)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	for ln := range lines {
		l.note(ln)
		seen++
	}
	_ = cmd.Wait() // dead before the cut: it cannot write after it
	return seen
}

// verifyAfterCut reopens the queue in a helper process and compares what
// it holds with the ledger.
func verifyAfterCut(t *testing.T, path string, l *cutLedger) cutOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPowerCutVerifyHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PLANTGATE_QUEUE_POWERCUT_VERIFY="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	present := map[string]int{}
	ok := false
	var o cutOutcome
	for ln := range strings.Lines(string(out)) {
		ln = strings.TrimSuffix(ln, "\n")
		switch {
		case strings.HasPrefix(ln, "R "):
			present[ln[2:]]++
		case ln == "OK":
			ok = true
		case strings.HasPrefix(ln, "ERR "):
			o.broken = errors.New(ln[4:])
		}
	}
	if !ok {
		if o.broken == nil {
			o.broken = fmt.Errorf("verifier failed (%w): %s", err, lastLines(stderr.String(), 8))
		}
		return o
	}
	o.present = len(present)
	for id, n := range present {
		if n > 1 {
			o.twice = append(o.twice, id)
		}
		if l.acked[id] {
			o.back = append(o.back, id)
		}
	}
	for id := range l.appended {
		if present[id] == 0 && !l.acked[id] && !l.acking[id] {
			o.lost = append(o.lost, id)
		}
	}
	return o
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}

// TestPowerCutQueue cuts the power (LazyFS drops every byte not fsync'd)
// under a writer that appends and acks, many times, and checks after each
// cut that the queue opens, passes Check, holds every record whose Append
// had returned (unless an Ack of it had started) and no record whose Ack
// had returned. A SIGKILL alone cannot show a missing fsync;
// TestPowerCutQueueNoSyncControl shows that this test can.
func TestPowerCutQueue(t *testing.T) {
	if os.Getenv("PLANTGATE_QUEUE_POWERCUT_HELPER") != "" || os.Getenv("PLANTGATE_QUEUE_POWERCUT_VERIFY") != "" {
		t.Skip("inside a helper")
	}
	fs := lazyfs.MountWith(t, lazyfs.Config{CacheSize: "128mb"})
	cuts := powerCuts(24)
	path := filepath.Join(fs.Dir(), "queue.db")
	l := newCutLedger()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	confirmed := 0
	for k := 0; k < cuts; k++ {
		confirmed += runUntilKilled(t, path, k, false, rng, 0, l)
		fs.Cut()
		fs.Remount()
		if o := verifyAfterCut(t, path, l); o.bad() {
			t.Fatalf("cut %d: %s", k, o)
		}
	}
	fi, _ := os.Stat(path)
	t.Logf("%d power cuts: %d appends and %d acks confirmed before the cuts, all accounted for (queue file %d KiB, LazyFS cache at most %.0f%% full)",
		cuts, len(l.appended), len(l.acked), fi.Size()>>10, fs.MaxCacheUsage())
	if len(l.appended) == 0 || len(l.acked) == 0 {
		t.Fatalf("the writer confirmed %d appends and %d acks; the test proved nothing", len(l.appended), len(l.acked))
	}
}

// TestPowerCutQueueNoSyncControl runs the same writer with NoSync (bbolt
// does not fsync its commits) and asserts that the checker of
// TestPowerCutQueue finds the damage: confirmed appends that are gone,
// acks undone, or a file that no longer opens or passes Check. If it
// found nothing, the power-cut machinery would not be simulating a cut
// and TestPowerCutQueue would prove nothing.
func TestPowerCutQueueNoSyncControl(t *testing.T) {
	if os.Getenv("PLANTGATE_QUEUE_POWERCUT_HELPER") != "" || os.Getenv("PLANTGATE_QUEUE_POWERCUT_VERIFY") != "" {
		t.Skip("inside a helper")
	}
	const maxCuts, enough = 8, 3
	fs := lazyfs.MountWith(t, lazyfs.Config{CacheSize: "128mb"})
	path := filepath.Join(fs.Dir(), "queue.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 13))
	detected, lost, back, broken, cuts := 0, 0, 0, 0, 0
	l := newCutLedger()
	for cuts < maxCuts && detected < enough {
		// At least a few hundred confirmations, so that there is something
		// unsynced to lose when the cut comes.
		runUntilKilled(t, path, cuts, true, rng, 300, l)
		fs.Cut()
		fs.Remount()
		o := verifyAfterCut(t, path, l)
		cuts++
		if !o.bad() {
			t.Logf("cut %d: nothing lost (%s)", cuts, o)
			continue
		}
		detected++
		lost += len(o.lost)
		back += len(o.back)
		if o.broken != nil {
			broken++
		}
		t.Logf("cut %d: detected: %s", cuts, o)
		// Start over from an empty queue, so each cut is judged alone.
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		l = newCutLedger()
	}
	if detected == 0 {
		t.Fatalf("NoSync lost nothing in %d power cuts: the power-cut test cannot see a missing fsync", cuts)
	}
	t.Logf("NoSync control: loss detected in %d of %d cuts (%d confirmed appends gone, %d confirmed acks undone, %d files unusable)",
		detected, cuts, lost, back, broken)
}
