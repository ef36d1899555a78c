package mqtt

import (
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/plantgate/plantgate/internal/queue"
)

// Ingest benchmarks: b.N QoS 1 messages of about 200 bytes through a
// mosquitto started by the benchmark, into the queue (fsync on), beside a
// null subscriber (acknowledges at once, stores nothing) on the same
// broker in the same run. They report msg/s for both and their ratio.
// make bench runs them; make test does not.

// nullSubscriber connects with a persistent session and counts messages.
type nullSubscriber struct {
	c paho.Client
	n atomic.Int64
}

func newNullSubscriber(b *testing.B, url, id, topic string) *nullSubscriber {
	ns := &nullSubscriber{}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(false).SetOrderMatters(true).
		SetDefaultPublishHandler(func(paho.Client, paho.Message) { ns.n.Add(1) })
	ns.c = paho.NewClient(o)
	if tok := ns.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	if tok := ns.c.Subscribe(topic, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	return ns
}

func (ns *nullSubscriber) reconnect(b *testing.B) {
	if tok := ns.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
}

func waitCount(b *testing.B, what string, n int64, count func() int64) {
	deadline := time.Now().Add(5 * time.Minute)
	tk := time.NewTicker(time.Millisecond)
	defer tk.Stop()
	for count() < n {
		if time.Now().After(deadline) {
			b.Fatalf("%s: %d of %d after 5 minutes", what, count(), n)
		}
		<-tk.C
	}
}

func benchGateway(b *testing.B, m *mosquitto, id, topic string) *gateway {
	cfg := clientConfig(m, id, topic)
	g := newGateway(b, filepath.Join(b.TempDir(), "q.db"), cfg, queue.Options{})
	return g
}

// BenchmarkIngestLive publishes while the subscriber is connected.
func BenchmarkIngestLive(b *testing.B) {
	m := startMosquitto(b)
	n := int64(b.N)
	pub := newPublisher(b, m.url(), "bench-pub")

	ns := newNullSubscriber(b, m.url(), "bench-null", "null/#")
	start := time.Now()
	pub.send("null/a", 1, "n", 0, b.N)
	waitCount(b, "null subscriber", n, ns.n.Load)
	nullRate := float64(n) / time.Since(start).Seconds()
	ns.c.Disconnect(100)

	g := benchGateway(b, m, "bench-gw", "gw/#").start()
	g.waitSubscribed()
	b.ResetTimer()
	start = time.Now()
	pub.send("gw/a", 1, "g", 0, b.N)
	waitCount(b, "gateway", n, g.src.acked.Load)
	gwRate := float64(n) / time.Since(start).Seconds()
	b.StopTimer()
	b.ReportMetric(gwRate, "msg/s")
	b.ReportMetric(nullRate, "null_msg/s")
	b.ReportMetric(gwRate/nullRate, "ratio")
	g.close()
}

// BenchmarkIngestBacklog drains b.N messages the broker queued while the
// subscriber was away.
func BenchmarkIngestBacklog(b *testing.B) {
	m := startMosquitto(b)
	n := int64(b.N)
	pub := newPublisher(b, m.url(), "bench-pub")

	ns := newNullSubscriber(b, m.url(), "bench-null", "null/#")
	ns.c.Disconnect(100)
	pub.send("null/a", 1, "n", 0, b.N)
	start := time.Now()
	ns.reconnect(b)
	waitCount(b, "null subscriber", n, ns.n.Load)
	nullRate := float64(n) / time.Since(start).Seconds()
	ns.c.Disconnect(100)

	g := benchGateway(b, m, "bench-gw", "gw/#").start()
	g.waitSubscribed()
	g.stop()
	pub.send("gw/a", 1, "g", 0, b.N)
	b.ResetTimer()
	start = time.Now()
	g.start()
	waitCount(b, "gateway", n, g.src.acked.Load)
	gwRate := float64(n) / time.Since(start).Seconds()
	b.StopTimer()
	b.ReportMetric(gwRate, "msg/s")
	b.ReportMetric(nullRate, "null_msg/s")
	b.ReportMetric(gwRate/nullRate, "ratio")
	if got := g.count(); got != b.N {
		b.Fatalf("queue holds %d records, want %d", got, b.N)
	}
	g.close()
}
