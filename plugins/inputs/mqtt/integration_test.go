package mqtt

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

func clientConfig(m *mosquitto, clientID string, topics ...string) Config {
	c := Config{Broker: m.url(), ClientID: clientID, QoS: 1, ReconnectInitial: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond}
	for _, f := range topics {
		c.Topics = append(c.Topics, Topic{Filter: f})
	}
	return c
}

func intp(v int) *int { return &v }

// TestIntegrationMosquittoIngest checks QoS 0, 1 and 2 messages arrive in
// the queue once each, with their metadata, and that the counters agree.
func TestIntegrationMosquittoIngest(t *testing.T) {
	m := startMosquitto(t)
	cfg := clientConfig(m, "pg-ingest", "t/q1/#")
	cfg.Topics = append(cfg.Topics, Topic{Filter: "t/q0/#", QoS: intp(0)}, Topic{Filter: "t/q2/#", QoS: intp(2)})
	g := newGateway(t, filepath.Join(t.TempDir(), "q.db"), cfg, queue.Options{}).start()
	g.waitSubscribed()

	p := newPublisher(t, m.url(), "pub-ingest")
	p.send("t/q1/a", 1, "q1", 0, 2000)
	p.send("t/q0/a", 0, "q0", 0, 100)
	p.send("t/q2/a", 2, "q2", 0, 100)
	eventually(t, 30*time.Second, "2200 records", func() bool { return g.count() == 2200 })
	ids, n := g.ids()
	if len(ids) != n {
		t.Fatalf("%d records but %d distinct ids", n, len(ids))
	}
	recs, err := g.store.List(testStream, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	byQoS := map[string]int{}
	for _, r := range recs {
		topic, _ := r.Meta[MetaTopic].(string)
		byQoS[fmt.Sprint(r.Meta[MetaQoS])]++
		if !strings.HasPrefix(topic, "t/q") || r.Meta[MetaReceivedAt] == nil || r.Meta[MetaRetained] != false {
			t.Fatalf("meta of %s: %v", r.ID, r.Meta)
		}
		if _, ok := r.Meta[MetaMessageID]; ok == (fmt.Sprint(r.Meta[MetaQoS]) == "0") {
			t.Fatalf("message_id presence wrong for qos %v: %v", r.Meta[MetaQoS], r.Meta)
		}
		if _, ok := r.Meta[MetaBrokerTime]; ok {
			t.Fatalf("client mode has no broker time, got %v", r.Meta)
		}
	}
	if byQoS["0"] != 100 || byQoS["1"] != 2000 || byQoS["2"] != 100 {
		t.Fatalf("records by qos: %v", byQoS)
	}
	eventually(t, 5*time.Second, "in_flight 0", func() bool { return g.src.Status()["in_flight"] == int64(0) })
	st := g.src.Status()
	if st["received"] != int64(2200) || st["acked"] != int64(2200) || st["decode_failures"] != int64(0) || st["mode"] != "client" {
		t.Fatalf("status: %v", st)
	}
	if got := testutil.ToFloat64(g.src.m.acked); got != 2200 {
		t.Fatalf("acked metric %v", got)
	}
	if n, err := testutil.GatherAndCount(g.reg, "plantgate_mqtt_connected", "plantgate_mqtt_messages_received_total"); err != nil || n != 2 {
		t.Fatalf("metrics: %d, %v", n, err)
	}
	if err := g.src.Probe(t.Context()); err != nil {
		t.Fatalf("probe while connected: %v", err)
	}
}

// TestIntegrationMosquittoBadInput sends payloads that cannot become
// records; each is dead-lettered with its reason and raw bytes, and the
// subscription keeps running.
func TestIntegrationMosquittoBadInput(t *testing.T) {
	m := startMosquitto(t)
	cfg := clientConfig(m, "pg-bad", "bad/#")
	cfg.MaxPayloadBytes = 256
	g := newGateway(t, filepath.Join(t.TempDir(), "q.db"), cfg, queue.Options{}).start()
	g.waitSubscribed()
	p := newPublisher(t, m.url(), "pub-bad")
	for _, b := range [][]byte{[]byte(`{"msg_id":`), {0xff, 0xfe, 0x00, 0x01}, []byte(`{"msg_id":"big","pad":"` + strings.Repeat("y", 1000) + `"}`), []byte(`{"no_id":1}`)} {
		if tok := p.c.Publish("bad/x", 1, false, b); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	p.send("bad/x", 1, "good", 0, 1)
	eventually(t, 10*time.Second, "the good record", func() bool { return g.count() == 1 })
	var dead []queue.DeadLetterRecord
	eventually(t, 10*time.Second, "4 dead letters", func() bool {
		var err error
		dead, err = g.store.ListDead(testDead, 0, 0)
		return err == nil && len(dead) == 4
	})
	for i, want := range []string{"decode: json: unexpected EOF", "decode: json: payload is not valid UTF-8", "exceeds max_payload_bytes 256", "id: expression \"payload.msg_id\" gave no value"} {
		if !strings.Contains(dead[i].Reason, want) {
			t.Errorf("dead letter %d: reason %q, want it to contain %q", i, dead[i].Reason, want)
		}
		if len(dead[i].Record.Raw) == 0 || dead[i].Record.Meta[MetaTopic] != "bad/x" {
			t.Errorf("dead letter %d lacks raw bytes or topic: %+v", i, dead[i].Record)
		}
	}
	if len(dead[2].Record.Raw) != 256 || dead[2].Record.Meta[MetaTruncated] != true {
		t.Errorf("oversize payload kept %d bytes, meta %v", len(dead[2].Record.Raw), dead[2].Record.Meta)
	}
	if st := g.src.Status(); st["decode_failures"] != int64(3) {
		t.Errorf("decode_failures %v, want 3", st["decode_failures"])
	}
}

// TestIntegrationMosquittoBrokerRestart restarts mosquitto (SIGTERM, so it
// saves the sessions) while plantgate is connected and while it is away:
// the source reconnects, subscribes again and nothing is lost.
func TestIntegrationMosquittoBrokerRestart(t *testing.T) {
	m := startMosquitto(t)
	path := filepath.Join(t.TempDir(), "q.db")
	cfg := clientConfig(m, "pg-restart", "r/#")
	g := newGateway(t, path, cfg, queue.Options{}).start()
	g.waitSubscribed()
	newPublisher(t, m.url(), "pub-r1").send("r/a", 1, "a", 0, 500)
	eventually(t, 20*time.Second, "500 records", func() bool { return g.count() == 500 })

	m.stop(syscall.SIGTERM)
	eventually(t, 10*time.Second, "the source to notice", func() bool { return g.src.Status()["connected"] == false })
	m.start()
	g.waitSubscribed()
	newPublisher(t, m.url(), "pub-r2").send("r/a", 1, "a", 500, 1000)
	eventually(t, 20*time.Second, "1000 records", func() bool { return g.count() == 1000 })

	// plantgate away: the broker queues for the persistent session and
	// keeps the queue across its own clean restart.
	g.stop()
	newPublisher(t, m.url(), "pub-r3").send("r/a", 1, "a", 1000, 1500)
	m.stop(syscall.SIGTERM)
	m.start()
	g.start()
	eventually(t, 20*time.Second, "1500 records", func() bool { return g.count() == 1500 })

	// A broker that lost its state (new install, deleted persistence file)
	// has no subscription for plantgate: the source subscribes again.
	m.stop(syscall.SIGTERM)
	if err := os.Remove(filepath.Join(m.dir, "mosquitto.db")); err != nil {
		t.Fatal(err)
	}
	m.start()
	eventually(t, 20*time.Second, "the source to reconnect", func() bool { return g.src.Status()["connected"] == true })
	g.waitSubscribed()
	newPublisher(t, m.url(), "pub-r4").send("r/a", 1, "a", 1500, 2000)
	eventually(t, 20*time.Second, "2000 records", func() bool { return g.count() == 2000 })
	ids, n := g.ids()
	if len(ids) != 2000 || n != 2000 {
		t.Fatalf("%d records, %d distinct", n, len(ids))
	}
	if st := g.src.Status(); st["connection_losses"].(int64) < 1 {
		t.Fatalf("connection_losses %v", st["connection_losses"])
	}
}

// TestIntegrationMosquittoBackPressure fills the queue quota: the source
// must stop acknowledging (what is acked is exactly what is committed),
// pause, lose nothing when it is stopped while paused, and resume when a
// sink frees room.
func TestIntegrationMosquittoBackPressure(t *testing.T) {
	const total = 2000
	m := startMosquitto(t)
	path := filepath.Join(t.TempDir(), "q.db")
	cfg := clientConfig(m, "pg-full", "full/#")
	cfg.MaxInFlight, cfg.BatchMax, cfg.PauseAfter = 50, 20, 300*time.Millisecond
	// The quota covers everything in the file, the idempotency keys of all
	// 2000 messages (kept for the dedup window) included.
	qo := queue.Options{MaxBytes: 1_500_000}
	g := newGateway(t, path, cfg, qo).start()
	g.waitSubscribed()
	newPublisher(t, m.url(), "pub-full").send("full/a", 1, "f", 0, total)

	eventually(t, 20*time.Second, "the source to pause", func() bool { return g.src.Status()["paused"] == true })
	// A commit under way when the pause began still lands and is acked:
	// compare once the queue has stopped growing.
	committed := g.count()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
		time.Sleep(200 * time.Millisecond)
		n := g.count()
		if n == committed {
			break
		}
		committed = n
	}
	st := g.src.Status()
	if committed == 0 || committed >= total {
		t.Fatalf("%d records committed before the pause", committed)
	}
	if st["acked"] != int64(committed) {
		t.Fatalf("acked %v, but %d records are committed", st["acked"], committed)
	}
	if err := g.src.Probe(t.Context()); err == nil {
		t.Fatal("probe while paused reported ready")
	}
	t.Logf("paused with %d records committed and acked, %v in flight", committed, st["in_flight"])

	// Stop while paused and full: the messages in the window were never
	// acknowledged, so the broker still has them.
	g.stop()
	g.start()

	// A sink frees room; ingest resumes and every message arrives once.
	seen := map[string]int{}
	ctx := t.Context()
	eventually(t, 60*time.Second, "all messages delivered through the sink", func() bool {
		recs, err := g.store.Lease(testStream, 100, 0)
		if err != nil {
			t.Fatal(err)
		}
		seqs := make([]uint64, len(recs))
		for i, r := range recs {
			seen[r.ID]++
			seqs[i] = r.Seq
		}
		if len(seqs) > 0 {
			if err := g.store.Ack(ctx, testStream, seqs); err != nil {
				t.Fatal(err)
			}
		}
		return len(seen) == total
	})
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("record %s delivered %d times", id, n)
		}
	}
	eventually(t, 10*time.Second, "ingest to resume", func() bool { return g.src.Status()["paused"] == false })
}

// TestIntegrationMosquittoSharedSubscription runs two gateways in one
// shared-subscription group: every message lands in exactly one queue.
func TestIntegrationMosquittoSharedSubscription(t *testing.T) {
	const total = 2000
	m := startMosquitto(t)
	dir := t.TempDir()
	a := newGateway(t, filepath.Join(dir, "a.db"), clientConfig(m, "pg-share-a", "$share/plantgate/s/#"), queue.Options{}).start()
	b := newGateway(t, filepath.Join(dir, "b.db"), clientConfig(m, "pg-share-b", "$share/plantgate/s/#"), queue.Options{}).start()
	a.waitSubscribed()
	b.waitSubscribed()
	newPublisher(t, m.url(), "pub-share").send("s/line1", 1, "s", 0, total)
	eventually(t, 30*time.Second, "all messages in one of the queues", func() bool { return a.count()+b.count() >= total })
	ia, na := a.ids()
	ib, nb := b.ids()
	for id := range ia {
		if ib[id] > 0 {
			t.Fatalf("message %s is in both queues", id)
		}
	}
	if len(ia)+len(ib) != total || na+nb != total {
		t.Fatalf("union %d distinct of %d records, want %d", len(ia)+len(ib), na+nb, total)
	}
	if na == 0 || nb == 0 {
		t.Fatalf("one gateway got nothing: %d and %d", na, nb)
	}
	t.Logf("gateway a took %d, gateway b %d", na, nb)
}

// TestIntegrationMosquittoInFlightBound: max_in_flight bounds the
// messages between the handler and their acknowledgement wherever they
// are (the window, the batch being decoded, the one being committed), so
// that it bounds the memory ingest takes. With commits held, the source
// holds at most max_in_flight messages (plus the one paho is handing
// over); the window alone would let it hold max_in_flight more for each
// batch in a stage. Once the commits go on, every message arrives once.
func TestIntegrationMosquittoInFlightBound(t *testing.T) {
	const total, window, batch = 400, 40, 15
	m := startMosquitto(t)
	cfg := clientConfig(m, "pg-bound", "bound/#")
	cfg.MaxInFlight, cfg.BatchMax = window, batch
	src, err := New(&cfg, pipeline.Env{Name: testSource, Log: testLogger(t), Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	em := newBlockingEmitter()
	em.block()
	runSource(t, src, em)
	eventually(t, 10*time.Second, "the source to subscribe", func() bool { return src.Status()["connected"] == true })
	newPublisher(t, m.url(), "pub-bound").send("bound/a", 1, "b", 0, total) // the broker acknowledges the publisher itself

	<-em.entered // one batch is being committed
	held := int64(0)
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		held = max(held, src.inFlight.Load())
	}
	if held > window+1 {
		t.Fatalf("with commits held the source holds %d messages; max_in_flight is %d", held, window)
	}
	if held < window {
		t.Fatalf("with commits held the source holds only %d messages; it should fill max_in_flight (%d)", held, window)
	}
	em.unblock()
	eventually(t, 30*time.Second, "every message committed", func() bool { return len(em.committed()) >= total })
	seen := map[string]int{}
	for _, msg := range em.committed() {
		p, _ := msg.Payload.(map[string]any)
		seen[fmt.Sprint(p["msg_id"])]++
	}
	if len(seen) != total {
		t.Fatalf("%d distinct messages committed, want %d", len(seen), total)
	}
	t.Logf("with commits held: %d messages in flight (max_in_flight %d, batch_max %d)", held, window, batch)
}
