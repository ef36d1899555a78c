package mqtt

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
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/queue"
	"github.com/plantgate/plantgate/internal/testutil/lazyfs"
)

var powerCutCuts = flag.Int("powercut.cuts", 0, "power cuts in TestPowerCutMQTTIngest (0: $PLANTGATE_POWERCUT_CUTS, or 8)")

// powerCuts is the number of cuts (lazyfs.Cuts).
func powerCuts(def int) int { return lazyfs.Cuts(*powerCutCuts, def) }

// TestMQTTPowerCutVerifyHelper is not a test: the power-cut tests run it
// with PLANTGATE_MQTT_POWERCUT_VERIFY set to the queue path after a cut, to
// reopen the queue as a restarted gateway would, Check it, and print
// "R id" for each record of the stream, "D n" with the number of dead
// letters, then "OK". It is a process of its own because bbolt may panic
// (in a goroutine of its own, where no recover reaches) on a file a cut
// corrupted, which the NoSync control can produce.
func TestMQTTPowerCutVerifyHelper(t *testing.T) {
	path := os.Getenv("PLANTGATE_MQTT_POWERCUT_VERIFY")
	if path == "" {
		t.Skip("helper process for TestPowerCutMQTTIngest")
	}
	fail := func(what string, err error) {
		fmt.Printf("ERR %s: %s\n", what, strings.ReplaceAll(err.Error(), "\n", "; "))
		os.Exit(1)
	}
	s, err := queue.Open(path, queue.Options{OpenTimeout: 5 * time.Second})
	if err != nil {
		fail("open", err)
	}
	if err := s.Check(); err != nil {
		fail("check", err)
	}
	recs, err := s.List(testStream, 0, 0)
	if err != nil && !errors.Is(err, queue.ErrUnknownStream) {
		fail("list", err)
	}
	dead, err := s.ListDead(testDead, 0, 0)
	if err != nil && !errors.Is(err, queue.ErrUnknownStream) {
		fail("list dead", err)
	}
	w := bufio.NewWriter(os.Stdout)
	for _, r := range recs {
		fmt.Fprintf(w, "R %s\n", r.ID)
	}
	fmt.Fprintf(w, "D %d\nOK\n", len(dead))
	_ = w.Flush()
	if err := s.Close(); err != nil {
		fail("close", err)
	}
	os.Exit(0)
}

// queueAfterCut is what the verifier found in the queue.
type queueAfterCut struct {
	broken  error          // did not open, or failed Check
	ids     map[string]int // msg_id -> records
	records int
	dead    int
}

func verifyQueueAfterCut(t *testing.T, path string) queueAfterCut {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestMQTTPowerCutVerifyHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PLANTGATE_MQTT_POWERCUT_VERIFY="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	q := queueAfterCut{ids: map[string]int{}}
	ok := false
	for ln := range strings.Lines(string(out)) {
		ln = strings.TrimSuffix(ln, "\n")
		switch {
		case strings.HasPrefix(ln, "R "):
			q.ids[ln[2:]]++
			q.records++
		case strings.HasPrefix(ln, "D "):
			q.dead, _ = strconv.Atoi(ln[2:])
		case ln == "OK":
			ok = true
		case strings.HasPrefix(ln, "ERR "):
			q.broken = errors.New(ln[4:])
		}
	}
	if !ok && q.broken == nil {
		ls := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		q.broken = fmt.Errorf("verifier failed (%w): %s", err, strings.Join(ls[max(0, len(ls)-8):], "\n"))
	}
	return q
}

// mqttCuts is the outcome of a power-cut run of the ingest path.
type mqttCuts struct {
	cuts, total int
	// regressions describes cuts after which the queue held fewer records
	// than the gateway had reported committed before the cut.
	regressions []string
	lostRecords int64    // summed over the regressions
	broken      error    // the queue was unusable after a cut
	brokenAt    int      // which cut
	missing     []string // published (PUBACKed by the broker), never in the queue at the end
	twice       []string // in the queue more than once
	dead        int
	fileKiB     int64
	cacheUse    float64 // LazyFS's highest cache usage at a cut, percent
}

const powerCutPerCut = 1000

// runMQTTPowerCuts runs a gateway process (queue on a LazyFS mount, router,
// mqtt source in client mode with a persistent session) against mosquitto
// while a publisher sends QoS 1 messages with unique msg_ids, waiting for
// each PUBACK; cuts the power at a random moment of each round; and after
// a last run that drains the broker, reads the queue. With nosync the
// gateway opens its queue with NoSync and the last run ends without a
// cut (its records are read from LazyFS's cache), so that only the
// earlier cuts can have lost anything. In the sync run every broken
// expectation fails the test at once.
func runMQTTPowerCuts(t *testing.T, cuts int, nosync bool) mqttCuts {
	t.Helper()
	m := startMosquitto(t)
	fs := lazyfs.MountWith(t, lazyfs.Config{CacheSize: fmt.Sprintf("%dmb", 128+4*cuts)}) // the file grows by ~2 MB a cut; Cut fails when the cache fills
	path := filepath.Join(fs.Dir(), "ingest.db")
	pub := newPublisher(t, m.url(), "pub-powercut")
	env := []string{"PLANTGATE_MQTT_CRASH_CLIENT=pg-powercut"}
	minDelay := time.Duration(0)
	if nosync {
		env = append(env, "PLANTGATE_MQTT_CRASH_NOSYNC=1")
		minDelay = 100 * time.Millisecond // let it commit (and PUBACK) something first
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 19))
	r := mqttCuts{cuts: cuts, total: cuts * powerCutPerCut}

	for k := 0; k < cuts; k++ {
		child := startCrashChild(t, path, m.url(), env...)
		pubDone := make(chan struct{})
		base, last := killAtRandom(t, child, rng, minDelay, 250*time.Millisecond, func() {
			go func() {
				defer close(pubDone)
				pub.pacedSend("crash/line1", "p", k*powerCutPerCut, (k+1)*powerCutPerCut)
			}()
		})
		// killAtRandom waited for the gateway to exit: it cannot write
		// after the cut.
		fs.Cut()
		<-pubDone // the broker holds what the gateway did not acknowledge
		fs.Remount()
		q := verifyQueueAfterCut(t, path)
		if q.broken != nil {
			if !nosync {
				t.Fatalf("cut %d: the queue is unusable after the power cut: %v", k, q.broken)
			}
			r.broken, r.brokenAt = q.broken, k
			t.Logf("cut %d: the queue is unusable after the power cut: %v", k, q.broken)
			return r
		}
		for id, n := range q.ids {
			if n > 1 {
				if !nosync {
					t.Fatalf("cut %d: message %s is in the queue %d times", k, id, n)
				}
				r.twice = append(r.twice, id)
			}
		}
		t.Logf("cut %d: %d messages published, the gateway started with %d records and reported %d committed before the cut; the queue holds %d",
			k, (k+1)*powerCutPerCut, base, last, q.records)
		if int64(q.records) < last {
			msg := fmt.Sprintf("cut %d: the gateway reported %d records committed (and acknowledged them to the broker), the queue holds %d after the power cut",
				k, last, q.records)
			if !nosync {
				t.Fatal(msg)
			}
			r.regressions = append(r.regressions, msg)
			r.lostRecords += last - int64(q.records)
		}
	}

	// A last run without a cut: it takes whatever the broker still holds.
	child := startCrashChild(t, path, m.url(), env...)
	defer child.kill()
	changed, prev := time.Now(), int64(-1)
	child.waitFor(t, 120*time.Second, fmt.Sprintf("%d records", r.total), func(string) bool {
		if child.count != prev {
			changed, prev = time.Now(), child.count
		}
		// With NoSync some messages are gone for good: stop once the
		// count has stood still for a while.
		return child.count >= int64(r.total) || (nosync && time.Since(changed) > 3*time.Second)
	})
	child.kill()
	if !nosync {
		// Even the last run's records were fsync'd before the broker got
		// its PUBACK: a cut now loses nothing either.
		fs.Cut()
		fs.Remount()
	}
	q := verifyQueueAfterCut(t, path)
	if q.broken != nil {
		if !nosync {
			t.Fatalf("after the last run: %v", q.broken)
		}
		r.broken, r.brokenAt = q.broken, cuts
		return r
	}
	for i := range r.total {
		id := fmt.Sprintf("p-%d", i)
		switch q.ids[id] {
		case 1:
		case 0:
			r.missing = append(r.missing, id)
		default:
			r.twice = append(r.twice, id)
		}
	}
	r.dead = q.dead
	r.cacheUse = fs.MaxCacheUsage()
	if fi, err := os.Stat(path); err == nil {
		r.fileKiB = fi.Size() >> 10
	}
	return r
}

// TestPowerCutMQTTIngest cuts the power under a gateway ingesting QoS 1
// messages from mosquitto (8 times, -powercut.cuts or
// PLANTGATE_POWERCUT_CUTS for more). The gateway acknowledges a message to
// the broker only after the queue's fsync'd commit, and the broker drops
// what it got acknowledged: so after each cut the queue must open, pass
// Check, hold no message twice and hold at least the records the gateway
// had reported committed; and at the end, after a last run drained the
// broker, it must hold every published message exactly once (the flow's
// id: payload.msg_id deduplicates redeliveries).
func TestPowerCutMQTTIngest(t *testing.T) {
	if os.Getenv("PLANTGATE_MQTT_CRASH_HELPER") != "" || os.Getenv("PLANTGATE_MQTT_POWERCUT_VERIFY") != "" {
		t.Skip("inside a helper")
	}
	lazyfs.Available(t)
	r := runMQTTPowerCuts(t, powerCuts(8), false)
	if len(r.missing) > 0 {
		t.Fatalf("%d of %d messages acknowledged by the broker are not in the queue, first: %s", len(r.missing), r.total, r.missing[0])
	}
	if len(r.twice) > 0 {
		t.Fatalf("%d messages are in the queue more than once, first: %s", len(r.twice), r.twice[0])
	}
	if r.dead > 0 {
		t.Fatalf("%d dead letters", r.dead)
	}
	t.Logf("%d messages, %d power cuts at random moments: every message in the queue exactly once (queue file %d KiB, LazyFS cache at most %.0f%% full)",
		r.total, r.cuts, r.fileKiB, r.cacheUse)
}

// TestPowerCutMQTTIngestNoSyncControl runs the same with a gateway whose
// queue does not fsync (NoSync) and asserts that the test sees it:
// messages the gateway acknowledged to the broker after an unsynced commit
// are gone after the cut, and since the broker dropped them when it got
// the PUBACK, no redelivery brings them back, so they are missing at the
// end (or the cut left the queue unusable). Were nothing lost, the cuts
// would not be cutting and TestPowerCutMQTTIngest would prove nothing.
func TestPowerCutMQTTIngestNoSyncControl(t *testing.T) {
	if os.Getenv("PLANTGATE_MQTT_CRASH_HELPER") != "" || os.Getenv("PLANTGATE_MQTT_POWERCUT_VERIFY") != "" {
		t.Skip("inside a helper")
	}
	lazyfs.Available(t)
	r := runMQTTPowerCuts(t, 3, true)
	for _, msg := range r.regressions {
		t.Log(msg)
	}
	switch {
	case r.broken != nil:
		t.Logf("NoSync control: after cut %d of %d the queue was unusable (%v): loss detected", r.brokenAt+1, r.cuts, r.broken)
	case len(r.missing) > 0:
		t.Logf("NoSync control: %d of %d messages acknowledged by the broker were lost in %d power cuts (first: %s); %d of the cuts left fewer records than the gateway had reported committed (%d records)",
			len(r.missing), r.total, r.cuts, r.missing[0], len(r.regressions), r.lostRecords)
	default:
		t.Fatalf("NoSync lost no message in %d power cuts (%d cuts went back by %d records, all redelivered): the power-cut test cannot see a missing fsync",
			r.cuts, len(r.regressions), r.lostRecords)
	}
}
