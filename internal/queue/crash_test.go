package queue

import (
	"bufio"
	"context"
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
)

var crashKills = flag.Int("crash.kills", 50, "SIGKILLs in TestCrashSafetyUnderSIGKILL")

// TestCrashHelper is not a test: TestCrashSafetyUnderSIGKILL runs the test
// binary again with PLANTGATE_QUEUE_CRASH_HELPER set, and this function then
// appends and acks under load, printing "W id" after each Append returned
// and "A id" after each Ack returned, until it is killed.
func TestCrashHelper(t *testing.T) {
	path := os.Getenv("PLANTGATE_QUEUE_CRASH_HELPER")
	if path == "" {
		t.Skip("helper process for TestCrashSafetyUnderSIGKILL")
	}
	inc := os.Getenv("PLANTGATE_QUEUE_CRASH_INCARNATION")
	s, err := Open(path, Options{OpenTimeout: 5 * time.Second})
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
		_, _ = os.Stdout.WriteString(b.String())
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
					entries[j] = Entry{Stream: "flow.sink", Record: pipeline.Record{Key: fmt.Sprint(w), ID: ids[j], Fields: map[string]any{"i": i}}}
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
			continue
		}
		seqs := make([]uint64, len(recs))
		ids := make([]string, len(recs))
		for i, r := range recs {
			seqs[i], ids[i] = r.Seq, r.ID
		}
		// Announce the ack before it starts: a kill during Ack may or may
		// not have committed it, so these records may legitimately vanish.
		say("L", ids)
		if err := s.Ack(ctx, "flow.sink", seqs); err != nil {
			fmt.Fprintln(os.Stderr, "ack:", err)
			os.Exit(5)
		}
		say("A", ids)
	}
}

// TestCrashSafetyUnderSIGKILL kills a writer process at random moments and
// checks after each kill that the queue opens, passes Check, holds every
// record whose Append had returned (unless acked), and holds no record
// whose Ack had returned.
func TestCrashSafetyUnderSIGKILL(t *testing.T) {
	if os.Getenv("PLANTGATE_QUEUE_CRASH_HELPER") != "" {
		t.Skip("inside the helper")
	}
	kills := *crashKills
	path := filepath.Join(t.TempDir(), "crash.db")
	appended := map[string]bool{}
	acked := map[string]bool{}
	acking := map[string]bool{}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for k := 0; k < kills; k++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), "PLANTGATE_QUEUE_CRASH_HELPER="+path, fmt.Sprintf("PLANTGATE_QUEUE_CRASH_INCARNATION=%d", k))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Kill after the helper has made some progress plus a random delay.
		seen := 0
		deadline := time.After(10 * time.Second)
		want := 1 + rng.IntN(400)
	progress:
		for seen < want {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("helper %d exited early: %s", k, stderr.String())
				}
				record(l, appended, acked, acking)
				seen++
			case <-deadline:
				break progress
			}
		}
		time.Sleep(time.Duration(rng.IntN(20_000)) * time.Microsecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		for l := range lines {
			record(l, appended, acked, acking)
		}
		_ = cmd.Wait()

		s, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("kill %d: reopen: %v", k, err)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("kill %d: check: %v", k, err)
		}
		present := map[string]bool{}
		recs, err := s.List("flow.sink", 0, 0)
		if err != nil {
			t.Fatalf("kill %d: list: %v", k, err)
		}
		for _, r := range recs {
			if present[r.ID] {
				t.Fatalf("kill %d: record %s present twice", k, r.ID)
			}
			present[r.ID] = true
		}
		for id := range appended {
			if !present[id] && !acked[id] && !acking[id] {
				t.Fatalf("kill %d: record %s was appended (Append returned) but is gone and was never acked", k, id)
			}
		}
		for id := range acked {
			if present[id] {
				t.Fatalf("kill %d: record %s was acked but came back", k, id)
			}
		}
		_ = s.Close()
	}
	t.Logf("%d kills: %d appends and %d acks confirmed before the kills, all accounted for", kills, len(appended), len(acked))
	if len(appended) == 0 || len(acked) == 0 {
		t.Fatalf("the helper confirmed %d appends and %d acks; the test proved nothing", len(appended), len(acked))
	}
}

func record(l string, appended, acked, acking map[string]bool) {
	kind, id, ok := strings.Cut(l, " ")
	if !ok {
		return
	}
	switch kind {
	case "W":
		appended[id] = true
	case "A":
		acked[id] = true
	case "L":
		acking[id] = true
	}
}
