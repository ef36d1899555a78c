package mqtt

import (
	"hash/maphash"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// sourceMetrics are the source's Prometheus collectors, bound to its label.
// The vectors are shared by every mqtt source on a registry, so several
// sources (and a source rebuilt by a reload) register them once.
type sourceMetrics struct {
	connected      prometheus.Gauge
	paused         prometheus.Gauge
	received       prometheus.Counter
	acked          prometheus.Counter
	redeliveries   prometheus.Counter
	decodeFailures prometheus.Counter
	inFlight       prometheus.Gauge
	lastMessage    prometheus.Gauge
	connLosses     prometheus.Counter
	qos0Lost       prometheus.Counter
	clients        prometheus.Gauge
	inflightDrops  prometheus.Counter
	authFailures   prometheus.Counter
	aclDenials     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, source string) *sourceMetrics {
	l := []string{"source"}
	gauge := func(name, help string) prometheus.Gauge {
		return pipeline.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, l)).WithLabelValues(source)
	}
	counter := func(name, help string) prometheus.Counter {
		return pipeline.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, l)).WithLabelValues(source)
	}
	return &sourceMetrics{
		connected:      gauge("plantgate_mqtt_connected", "1 while connected to the broker (client mode) or listening (embedded broker)."),
		paused:         gauge("plantgate_mqtt_paused", "1 while ingest is paused because the queue has no room; the broker holds the messages."),
		received:       counter("plantgate_mqtt_messages_received_total", "PUBLISH packets received on ingested topics."),
		acked:          counter("plantgate_mqtt_messages_acked_total", "Messages acknowledged (or, for QoS 0, taken) after their queue commit."),
		redeliveries:   counter("plantgate_mqtt_redeliveries_total", "Messages flagged DUP or identical (topic and payload) to one of the last 65536 received."),
		decodeFailures: counter("plantgate_mqtt_decode_failures_total", "Payloads that did not decode or exceeded max_payload_bytes; they are dead-lettered."),
		inFlight:       gauge("plantgate_mqtt_inflight_messages", "Messages received and not yet acknowledged."),
		lastMessage:    gauge("plantgate_mqtt_last_message_timestamp_seconds", "Unix time of the last message received."),
		connLosses:     counter("plantgate_mqtt_connection_losses_total", "Connections to the broker lost (client mode)."),
		qos0Lost:       counter("plantgate_mqtt_qos0_lost_total", "QoS 0 messages dropped because the connection closed while they waited for room (QoS 0 is never redelivered)."),
		clients:        gauge("plantgate_mqtt_broker_clients", "Clients connected to the embedded broker."),
		inflightDrops:  counter("plantgate_mqtt_broker_inflight_dropped_total", "QoS 1/2 messages the embedded broker dropped for a subscriber whose inflight store was full."),
		authFailures:   counter("plantgate_mqtt_broker_auth_failures_total", "Connections the embedded broker refused for bad credentials."),
		aclDenials:     counter("plantgate_mqtt_broker_acl_denials_total", "Publishes, subscriptions and deliveries the embedded broker's ACL refused."),
	}
}

// recent remembers hashes of the last messages to spot repeats. It is a
// hint for the redeliveries counter, never used to drop anything.
type recent struct {
	mu   sync.Mutex
	seed maphash.Seed
	ring []uint64
	next int
	set  map[uint64]int32
}

// recentSize covers what a broker sends again after a reconnect: at most
// the window and the batches in the writer stages (8,000 by default).
const recentSize = 1 << 14

func newRecent() *recent {
	return &recent{seed: maphash.MakeSeed(), ring: make([]uint64, 0, recentSize), set: make(map[uint64]int32, recentSize)}
}

// seen records topic and payload and reports whether they were among the
// last recentSize messages.
func (r *recent) seen(topic string, payload []byte) bool {
	var h maphash.Hash
	h.SetSeed(r.seed)
	_, _ = h.WriteString(topic)
	_ = h.WriteByte(0)
	_, _ = h.Write(payload)
	k := h.Sum64()
	r.mu.Lock()
	defer r.mu.Unlock()
	dup := r.set[k] > 0
	if len(r.ring) < recentSize {
		r.ring = append(r.ring, k)
	} else {
		old := r.ring[r.next]
		if r.set[old]--; r.set[old] <= 0 {
			delete(r.set, old)
		}
		r.ring[r.next] = k
		r.next = (r.next + 1) % recentSize
	}
	r.set[k]++
	return dup
}
