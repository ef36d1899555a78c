package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/plantgate/plantgate/internal/app"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/queue"
)

// upgradeDir is a queue file written by plantgate 988854f, the release
// before queue schema version 2 and one stream per fo.mes sink; its
// README says how produce.sh made it.
const upgradeDir = "testdata/upgrade-v1"

// copyUpgradeFile copies the old release's queue file and the file
// source's input into a new data dir and points the config there.
func copyUpgradeFile(t *testing.T) (dir, cfgPath string) {
	t.Helper()
	dir = t.TempDir()
	for _, name := range []string{"queue.db", "in.jsonl"} {
		b, err := os.ReadFile(filepath.Join(upgradeDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PG_UPGRADE_DIR", dir)
	t.Setenv("PG_UPGRADE_HTTP", "127.0.0.1:0")
	return dir, filepath.Join(upgradeDir, "plantgate.yaml")
}

// schemaOf reads the schema version a queue file says it has.
func schemaOf(t *testing.T, path string) uint64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v uint64
	if err := db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("meta")).Get([]byte("schema_version")); len(b) == 8 {
			v = binary.BigEndian.Uint64(b)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestUpgradeFromPreviousRelease starts the current gateway on the queue
// file of the previous release, with records queued while F&O was
// unreachable, dead letters (F&O's rejection, a line that is not JSON, a
// message without an order) and a message held in doubt with the next
// message of its order parked behind it. On the emulator's own records:
// every queued record is delivered once, in order per production order;
// the held and parked ones are not sent until released, then once, in
// order; the dead letters are still listed and replay; an id the old
// release delivered is still a duplicate; the file source goes on from
// its offset.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the gateway against the emulator")
	}
	em := foemutest.Start(t)
	t.Setenv("PG_UPGRADE_FO_URL", em.BaseURL())
	t.Setenv("PG_UPGRADE_FO_CA", em.CAFile())
	t.Setenv("PG_UPGRADE_FO_SECRET", foemu.DefaultClientSecret)
	dir, cfgPath := copyUpgradeFile(t)
	qpath := filepath.Join(dir, "queue.db")
	if v := schemaOf(t, qpath); v != 1 {
		t.Fatalf("testdata queue.db has schema %d, want the old release's 1", v)
	}
	start := func() (*app.App, func()) {
		t.Helper()
		cfg, flows, err := app.LoadConfig(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		a := app.New(cfg, flows, zerolog.Nop())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		foemutest.WaitFor(t, 10*time.Second, "gateway started", func() bool { return a.HTTPAddr() != nil })
		return a, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("gateway: %v", err)
			}
		}
	}
	// Started quantities per production order, in the order F&O got them.
	messages := func() map[string]string {
		out := map[string][]string{}
		for _, m := range em.Messages() {
			var c struct{ StartedQuantity json.Number }
			_ = json.Unmarshal([]byte(m.Content), &c)
			out[m.ProductionOrder] = append(out[m.ProductionOrder], c.StartedQuantity.String())
		}
		got := map[string]string{}
		for o, q := range out {
			got[o] = strings.Join(q, ",")
		}
		return got
	}
	count := func() int { return len(em.Messages()) }
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		foemutest.WaitFor(t, 15*time.Second, what, cond)
	}
	appendLines := func(lines ...string) {
		f, err := os.OpenFile(filepath.Join(dir, "in.jsonl"), os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			fmt.Fprintln(f, l)
		}
		_ = f.Close()
	}

	a, stop := start()
	waitFor("the 8 queued records delivered", func() bool { return count() == 8 })
	// A copy of a message the old release delivered (s-1), one delivered
	// just now (s-6), and a new one, which comes last.
	appendLines(`{"id":"s-1","order":"P000101","n":1}`, `{"id":"s-6","order":"P000101","n":2}`, `{"id":"s-14","order":"P000105","n":2}`)
	waitFor("s-14 delivered", func() bool { return messages()["P000105"] == "1,2" })
	st := a.Status()
	stop()

	want := map[string]string{"P000101": "2,3,4", "P000103": "2", "P000104": "1,2,3", "P000105": "1,2"}
	if got := messages(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("F&O got %v, want %v (each queued record once, in order per order; nothing held, parked or known)", got, want)
	}
	if len(st.InDoubt) != 2 {
		t.Errorf("status in doubt %+v, want the held record and the one parked behind it", st.InDoubt)
	}
	if v := schemaOf(t, qpath); v != queue.SchemaVersion {
		t.Errorf("schema after the gateway ran: %d, want %d", v, queue.SchemaVersion)
	}

	// The operator's view of the upgraded file.
	code, out, errOut := runCLI("queue", "check", "-c", cfgPath)
	if code != exitOK || !strings.Contains(out, "ok (2 streams, 0 records, 5 dead letters)") {
		t.Fatalf("queue check: %d %s%s", code, out, errOut)
	}
	code, out, errOut = runCLI("queue", "stats", "-c", cfgPath)
	if code != exitOK || !strings.Contains(out, "_source.mes  0        0      2") || !strings.Contains(out, "\nmes ") || strings.Contains(out, "start.mes") {
		t.Fatalf("queue stats: %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI("queue", "in-doubt", "-c", cfgPath)
	if code != exitOK || !strings.Contains(out, "mes     2    P000102  held") || !strings.Contains(out, "mes     3    P000102  parked (behind 2)") {
		t.Fatalf("queue in-doubt: %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI("queue", "dead", "-c", cfgPath)
	for _, reason := range []string{"decode: json: invalid character", `key: expression "payload.order" gave no value`, "400 Bad Request: Injected fault"} {
		if code != exitOK || !strings.Contains(out, reason) {
			t.Fatalf("queue dead lacks %q: %d\n%s%s", reason, code, out, errOut)
		}
	}
	s, err := queue.Open(qpath, queue.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var rejected uint64
	dead, _ := s.ListDead("mes", 0, 0)
	for _, d := range dead {
		if strings.Contains(d.Reason, "Injected fault") {
			rejected = d.Seq
		}
	}
	_ = s.Close()
	if rejected == 0 {
		t.Fatalf("no rejected dead letter in mes: %+v", dead)
	}

	// Replay the rejected message and the source's dead letters, release
	// the held message: all of it is sent once the gateway runs again.
	if code, out, errOut := runCLI("queue", "replay", "-c", cfgPath, "--stream", "mes", "--seq", fmt.Sprint(rejected)); code != exitOK || !strings.Contains(out, "replayed 1 dead letters") {
		t.Fatalf("replay: %d %s%s", code, out, errOut)
	}
	if code, out, errOut := runCLI("queue", "replay", "-c", cfgPath, "--stream", "_source.mes"); code != exitOK || !strings.Contains(out, "replayed 2 dead letters") {
		t.Fatalf("replay source: %d %s%s", code, out, errOut)
	}
	if count() != 9 {
		t.Fatalf("F&O got %d messages before the release, want 9 (the gateway is stopped)", count())
	}
	if code, out, errOut := runCLI("queue", "release", "-c", cfgPath, "--stream", "mes", "--seq", "2"); code != exitOK || !strings.Contains(out, "2 records requeued") {
		t.Fatalf("release: %d %s%s", code, out, errOut)
	}
	_, stop = start()
	waitFor("released, parked and replayed messages delivered", func() bool { return count() == 12 })
	stop()
	want["P000102"], want["P000103"] = "1,2", "2,1"
	if got := messages(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("F&O got %v, want %v", got, want)
	}
	s, err = queue.Open(qpath, queue.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if recs, _ := s.List("mes", 0, 0); len(recs) != 0 {
		t.Errorf("%d records still queued", len(recs))
	}
	if dead, _ := s.ListDead("mes", 0, 0); len(dead) != 0 {
		t.Errorf("dead letters of mes after release and replay: %+v", dead)
	}
	// The source's dead letters went through the flow again; the config
	// has not changed, so they are dead letters again, for the same reasons.
	dead, _ = s.ListDead("_source.mes", 0, 0)
	if len(dead) != 2 || !strings.HasPrefix(dead[0].Reason, "decode:") || !strings.Contains(dead[1].Reason, "gave no value") {
		t.Errorf("source dead letters after replay: %+v", dead)
	}
	if holds, _ := s.Holds("mes"); len(holds) != 0 {
		t.Errorf("holds left: %+v", holds)
	}
	for _, name := range s.Streams() {
		if name == "start.mes" {
			t.Errorf("the old release's stream start.mes is still in the file")
		}
	}
}

// TestNewerQueueFileRefused: a queue file of a newer schema version (as
// after a downgrade of the package) is refused by run (exit 78, so
// systemd does not restart it in a loop) and by the queue commands, each
// saying a newer plantgate wrote it; the file is left as it was.
func TestNewerQueueFileRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the emulator")
	}
	em := foemutest.Start(t)
	t.Setenv("PG_UPGRADE_FO_URL", em.BaseURL())
	t.Setenv("PG_UPGRADE_FO_CA", em.CAFile())
	t.Setenv("PG_UPGRADE_FO_SECRET", foemu.DefaultClientSecret)
	dir, cfgPath := copyUpgradeFile(t)
	qpath := filepath.Join(dir, "queue.db")
	s, err := queue.Open(qpath, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	db, err := bolt.Open(qpath, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema_version"), binary.BigEndian.AppendUint64(nil, queue.SchemaVersion+1))
	}); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	before, _ := os.ReadFile(qpath)
	const msg = "the file has version 3, written by a newer plantgate; this one reads up to version 2 (install the newer plantgate again)"
	code, _, errOut := runCLI("run", "-c", cfgPath, "--log-format", "json")
	if code != exitConfig || !strings.Contains(errOut, "gateway.data_dir") || !strings.Contains(errOut, msg) {
		t.Errorf("run on a newer file: exit %d\n%s", code, errOut)
	}
	for _, args := range [][]string{{"stats"}, {"check"}, {"dead"}, {"in-doubt"}, {"compact"}, {"release", "--stream", "mes", "--all"}} {
		code, _, errOut := runCLI(append([]string{"queue", args[0], "-c", cfgPath}, args[1:]...)...)
		if code != exitFailure || !strings.Contains(errOut, msg) {
			t.Errorf("queue %s on a newer file: exit %d %s", args[0], code, errOut)
		}
	}
	if after, _ := os.ReadFile(qpath); !bytes.Equal(before, after) {
		t.Errorf("refusing a newer file changed it")
	}
}
