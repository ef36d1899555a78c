package mqtt

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/plantgate/plantgate/internal/queue"
)

// Ingest benchmarks: b.N QoS 1 messages of about 200 bytes through a
// mosquitto started by the benchmark, into the queue (fsync on), beside a
// null subscriber (acknowledges at once, stores nothing) on the same
// broker in the same run, in alternating rounds. They report msg/s for
// both, their ratio, and the CPU time per message of each side and of
// mosquitto. The live benchmark's publisher is a process of its own, as
// an MES is, so its CPU and its collector are not the gateway's.
// make bench runs them (with GOGC=50, the collector target plantgate run
// sets); make test does not.

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

// cpuClock reads the CPU time (user and system) of this process and of
// the broker, so a benchmark can say where the time of each phase went.
type cpuClock struct {
	m          *mosquitto
	self, brok time.Duration
}

func (c *cpuClock) read() (self, broker time.Duration) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.m.cmd.Process.Pid)); err == nil {
		// Fields after the command name: utime and stime are the 12th
		// and 13th, in clock ticks (100 a second on Linux).
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				s, _ := strconv.ParseInt(f[12], 10, 64)
				broker = time.Duration(u+s) * 10 * time.Millisecond
			}
		}
	}
	return self, broker
}

func (c *cpuClock) start() { c.self, c.brok = c.read() }

// perMsg is the CPU microseconds per message of this process and of the
// broker since start.
func (c *cpuClock) perMsg(n int64) (self, broker float64) {
	s, br := c.read()
	return float64((s - c.self).Microseconds()) / float64(n), float64((br - c.brok).Microseconds()) / float64(n)
}

// reportCPU reports what perMsg measured for a phase, under the names
// <what>_cpu_us/msg and <what>_broker_cpu_us/msg.
func reportCPU(b *testing.B, what string, self, broker float64) {
	b.ReportMetric(self, what+"_cpu_us/msg")
	b.ReportMetric(broker, what+"_broker_cpu_us/msg")
}

// benchRounds is how many times each benchmark alternates the null
// subscriber and the gateway. Each side's figure is its best round, so a
// burst of other work on the shared machine costs one round of one side,
// not the ratio.
const benchRounds = 3

// roundSize is the number of messages of round r when n are split into
// benchRounds rounds.
func roundSize(n, r int) int { return (r+1)*n/benchRounds - r*n/benchRounds }

// best keeps the highest rate of the rounds and the CPU figures of that
// round.
type best struct {
	rate, cpu, broker float64
}

func (bs *best) note(n int, took time.Duration, clk *cpuClock) {
	rate := float64(n) / took.Seconds()
	if rate > bs.rate {
		bs.rate = rate
		bs.cpu, bs.broker = clk.perMsg(int64(n))
	}
}

// pubProc is the live benchmark's publisher process (this test binary
// running TestMQTTBenchPublisher).
type pubProc struct {
	in  io.WriteCloser
	out *bufio.Scanner
}

func startPubProc(b *testing.B, url string) *pubProc {
	cmd := exec.Command(os.Args[0], "-test.run=^TestMQTTBenchPublisher$", "-test.count=1")
	// The Go default for the publisher: GOGC=50 is the gateway's setting.
	cmd.Env = append(os.Environ(), "PLANTGATE_MQTT_BENCH_PUBLISH="+url, "GOGC=100")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = in.Close(); _ = cmd.Wait() })
	p := &pubProc{in: in, out: bufio.NewScanner(out)}
	p.expect(b, "READY")
	return p
}

func (p *pubProc) expect(b *testing.B, what string) {
	for p.out.Scan() {
		if p.out.Text() == what {
			return
		}
	}
	b.Fatalf("the publisher process ended before %s: %v", what, p.out.Err())
}

// send has the process publish messages from..to-1 of prefix on topic
// (QoS 1); done waits until the broker acknowledged them all.
func (p *pubProc) send(b *testing.B, topic, prefix string, from, to int) {
	if _, err := fmt.Fprintf(p.in, "%s %s %d %d\n", topic, prefix, from, to); err != nil {
		b.Fatal(err)
	}
}

func (p *pubProc) done(b *testing.B) { p.expect(b, "DONE") }

// TestMQTTBenchPublisher is the publisher process of BenchmarkIngestLive
// (PLANTGATE_MQTT_BENCH_PUBLISH=broker url): it connects and prints
// READY, then for each line "topic prefix from to" read publishes those
// messages as publisher.send does and prints DONE.
func TestMQTTBenchPublisher(t *testing.T) {
	url := os.Getenv("PLANTGATE_MQTT_BENCH_PUBLISH")
	if url == "" {
		t.Skip("the live ingest benchmark's publisher process")
	}
	p := newPublisher(t, url, "bench-pub-proc")
	fmt.Println("READY")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var topic, prefix string
		var from, to int
		if _, err := fmt.Sscan(sc.Text(), &topic, &prefix, &from, &to); err != nil {
			t.Fatal(err)
		}
		p.send(topic, 1, prefix, from, to)
		fmt.Println("DONE")
	}
}

// BenchmarkIngestLive publishes (from a process of its own) while the
// subscriber is connected.
func BenchmarkIngestLive(b *testing.B) {
	m := startMosquitto(b)
	pub := startPubProc(b, m.url())
	ns := newNullSubscriber(b, m.url(), "bench-null", "null/#")
	g := benchGateway(b, m, "bench-gw", "gw/#").start()
	g.waitSubscribed()
	clk := &cpuClock{m: m}
	var null, gw best
	from := 0
	b.ResetTimer()
	for r := range benchRounds {
		k := roundSize(b.N, r)
		clk.start()
		start := time.Now()
		pub.send(b, "null/a", "n", from, from+k)
		waitCount(b, "null subscriber", int64(from+k), ns.n.Load)
		null.note(k, time.Since(start), clk)
		pub.done(b)

		clk.start()
		start = time.Now()
		pub.send(b, "gw/a", "g", from, from+k)
		waitCount(b, "gateway", int64(from+k), g.src.acked.Load)
		gw.note(k, time.Since(start), clk)
		pub.done(b)
		from += k
	}
	b.StopTimer()
	reportIngest(b, &gw, &null)
	ns.c.Disconnect(100)
	g.close()
}

// BenchmarkIngestBacklog drains b.N messages the broker queued while the
// subscriber was away.
func BenchmarkIngestBacklog(b *testing.B) {
	m := startMosquitto(b)
	pub := newPublisher(b, m.url(), "bench-pub")
	ns := newNullSubscriber(b, m.url(), "bench-null", "null/#")
	ns.c.Disconnect(100)
	g := benchGateway(b, m, "bench-gw", "gw/#").start()
	g.waitSubscribed()
	g.stop()
	clk := &cpuClock{m: m}
	var null, gw best
	from := 0
	b.ResetTimer()
	for r := range benchRounds {
		k := roundSize(b.N, r)
		b.StopTimer()
		pub.send("null/a", 1, "n", from, from+k)
		pub.send("gw/a", 1, "g", from, from+k)
		b.StartTimer()

		clk.start()
		start := time.Now()
		ns.reconnect(b)
		waitCount(b, "null subscriber", int64(from+k), ns.n.Load)
		null.note(k, time.Since(start), clk)
		ns.c.Disconnect(100)

		clk.start()
		start = time.Now()
		g.start()
		waitCount(b, "gateway", int64(from+k), g.src.acked.Load)
		gw.note(k, time.Since(start), clk)
		g.stop()
		from += k
	}
	b.StopTimer()
	reportIngest(b, &gw, &null)
	if got := g.count(); got != b.N {
		b.Fatalf("queue holds %d records, want %d", got, b.N)
	}
	g.close()
}

func reportIngest(b *testing.B, gw, null *best) {
	reportCPU(b, "gw", gw.cpu, gw.broker)
	reportCPU(b, "null", null.cpu, null.broker)
	b.ReportMetric(gw.rate, "msg/s")
	b.ReportMetric(null.rate, "null_msg/s")
	b.ReportMetric(gw.rate/null.rate, "ratio")
}
