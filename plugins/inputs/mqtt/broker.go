package mqtt

import (
	"bytes"
	"context"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// Embedded broker limits. The broker must never drop a QoS 1/2 message
// for lack of room: MaximumInflight is mochi's per-client store of
// unacknowledged outbound messages (default 8192; messages beyond it are
// dropped silently and counted in Info.InflightDropped).
const (
	brokerMaxInflight      = 65535
	brokerMaxWritesPending = 65535
	brokerReceiveMaximum   = 65535
	minBrokerPacketBytes   = 16 << 20
)

// runBroker runs the embedded broker until ctx ends. Every PUBLISH on an
// ingested topic is decoded and emitted from mochi's OnPublish hook, which
// mochi calls before it writes the PUBACK (PUBREC for QoS 2) to the
// publisher; so the publisher's acknowledgement always follows the fsync'd
// commit. A publish whose Emit fails is not acknowledged, and the client is
// disconnected so that it sends the message again after reconnecting.
func (s *Source) runBroker(ctx context.Context, em pipeline.Emitter) error {
	e := s.cfg.Embedded
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumInflight = brokerMaxInflight
	caps.MaximumClientWritesPending = brokerMaxWritesPending
	caps.ReceiveMaximum = brokerReceiveMaximum
	caps.MaximumPacketSize = uint32(max(minBrokerPacketBytes, 2*s.cfg.MaxPayloadBytes+64<<10))
	srv := mochi.New(&mochi.Options{Capabilities: caps, Logger: slog.New(&slogBridge{log: s.log}), SysTopicResendInterval: 10})
	h := &ingestHook{s: s, em: em, ctx: ctx, srv: srv}
	if err := srv.AddHook(h, nil); err != nil {
		return fmt.Errorf("embedded broker hook: %w", err)
	}
	l := listeners.NewTCP(listeners.Config{Type: listeners.TypeTCP, ID: "plantgate-" + s.name, Address: e.Listen, TLSConfig: s.tls})
	if err := srv.AddListener(l); err != nil {
		return fmt.Errorf("embedded broker listen on %s: %w", e.Listen, err)
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return fmt.Errorf("embedded broker: %w", err)
	}
	addr := l.Address()
	s.mu.Lock()
	s.listen = addr
	s.mu.Unlock()
	s.setConnected(true, nil)
	if e.AllowAnonymous {
		s.log.Warn().Str(logging.FieldAddr, addr).Msg("embedded broker allows anonymous clients to publish and subscribe to every topic")
	}
	if s.tls == nil && !isLoopback(e.Listen) {
		s.log.Warn().Str(logging.FieldAddr, addr).Msg("embedded broker listens without TLS on a non-loopback address: passwords cross the network in clear text")
	}
	scheme := "tcp://"
	if s.tls != nil {
		scheme = "tls://"
	}
	s.log.Info().Str(logging.FieldURL, scheme+addr).Msg("embedded broker listening")

	t := time.NewTicker(time.Second)
	defer t.Stop()
	var dropped int64
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-t.C:
		}
		n := atomic.LoadInt64(&srv.Info.InflightDropped)
		if n > dropped {
			s.m.inflightDrops.Add(float64(n - dropped))
			s.log.Error().Int64(logging.FieldCount, n-dropped).
				Msg("embedded broker dropped QoS 1/2 messages for a subscriber whose inflight store was full")
			dropped = n
		}
		c := atomic.LoadInt64(&srv.Info.ClientsConnected)
		s.m.clients.Set(float64(c))
		s.mu.Lock()
		s.clients = c
		s.mu.Unlock()
	}
	h.close()
	_ = srv.Close()
	h.wait()
	s.m.clients.Set(0)
	s.setConnected(false, nil)
	s.log.Info().Str(logging.FieldAddr, addr).Msg("embedded broker stopped")
	return nil
}

func isLoopback(addr string) bool {
	host := addr
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		host = strings.Trim(addr[:i], "[]")
	}
	return host == "localhost" || strings.HasPrefix(host, "127.") || host == "::1"
}

// ingestHook is the embedded broker's plantgate hook: authentication,
// ACLs and ingest.
type ingestHook struct {
	mochi.HookBase
	s   *Source
	em  pipeline.Emitter
	ctx context.Context
	srv *mochi.Server

	mu     sync.Mutex
	closed bool
	active sync.WaitGroup
}

// ID implements mochi.Hook.
func (h *ingestHook) ID() string { return "plantgate-ingest" }

// Provides implements mochi.Hook.
func (h *ingestHook) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck || b == mochi.OnPublish
}

// enter registers a hook call that may Emit; false once the broker stops.
func (h *ingestHook) enter() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.active.Add(1)
	return true
}

func (h *ingestHook) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
}

func (h *ingestHook) wait() { h.active.Wait() }

// OnConnectAuthenticate checks the username and password of a CONNECT.
func (h *ingestHook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	if user == "" && !pk.Connect.PasswordFlag {
		if h.s.cfg.Embedded.AllowAnonymous {
			return true
		}
		h.authFailed(cl, user, "anonymous clients are not allowed")
		return false
	}
	u, ok := h.s.users[user]
	// Compare even for an unknown user, so timing does not tell which
	// usernames exist.
	want := []byte(u.Password.Reveal())
	if !ok {
		want = []byte{0}
	}
	if subtle.ConstantTimeCompare(want, pk.Connect.Password) != 1 || !ok {
		h.authFailed(cl, user, "bad username or password")
		return false
	}
	return true
}

func (h *ingestHook) authFailed(cl *mochi.Client, user, why string) {
	h.s.m.authFailures.Inc()
	h.s.log.Warn().Str(logging.FieldUsername, user).Str(logging.FieldClientID, cl.ID).Str(logging.FieldAddr, cl.Net.Remote).
		Str(logging.FieldReason, why).Msg("embedded broker refused a connection")
}

// OnACLCheck allows a publish (write) when the topic matches one of the
// user's publish filters, and a subscription or delivery (read) when the
// filter or topic lies within one of the user's subscribe filters.
func (h *ingestHook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	user := string(cl.Properties.Username)
	if user == "" {
		return h.s.cfg.Embedded.AllowAnonymous
	}
	u, ok := h.s.users[user]
	if ok {
		if write {
			for _, f := range u.Allow.Publish {
				if match(f, topic) {
					return true
				}
			}
		} else {
			for _, f := range u.Allow.Subscribe {
				if covers(f, topic) {
					return true
				}
			}
		}
	}
	h.s.m.aclDenials.Inc()
	// A refused publish disconnects the client: warn. Subscriptions and
	// deliveries are answered in the protocol: debug.
	lvl, op := zerolog.DebugLevel, "subscribe"
	if write {
		lvl, op = zerolog.WarnLevel, "publish"
	}
	h.s.log.WithLevel(lvl).Str(logging.FieldUsername, user).Str(logging.FieldClientID, cl.ID).Str(logging.FieldTopic, topic).
		Str(logging.FieldMethod, op).Msg("embedded broker ACL denied")
	return false
}

// ingests reports whether topic is one of the source's topics.
func (h *ingestHook) ingests(topic string) bool {
	_, ok := h.s.cfg.receives(topic)
	return ok
}

// OnPublish emits a PUBLISH on an ingested topic and returns only after
// the commit; mochi writes the PUBACK after this returns.
//
// A QoS 1/2 PUBLISH on a topic outside the source's topics is refused,
// never acknowledged: a PUBACK (PUBREC) tells the publisher its message is
// stored, and such a message would not be. MES treats an acknowledged
// message as delivered and never sends it again, so acknowledging it and
// counting it (the router's unmatched handling) would lose it for good
// with the default `unmatched: count`. A refusal instead surfaces the
// mistake (usually a topic typo or a topics list that is too narrow) in
// the MES itself, and the message stays in the publisher's store until the
// config is fixed: MQTT 5 publishers get PUBACK (PUBREC for QoS 2) with
// reason 0x87 "not authorized"; MQTT 3.1.1 cannot refuse one message, so
// the client is disconnected, as for an ACL denial, and sends the message
// again after it reconnects. QoS 0 publishes have no acknowledgement and
// promise nothing; they are still passed on to subscribers.
func (h *ingestHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	if !h.ingests(pk.TopicName) {
		if pk.FixedHeader.Qos == 0 {
			return pk, nil
		}
		return pk, h.refuse(cl, pk)
	}
	if !h.enter() {
		_ = h.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		return pk, packets.ErrRejectPacket
	}
	defer h.active.Done()
	s := h.s
	at := s.now().UTC()
	s.noteReceived(pk.TopicName, pk.Payload, pk.FixedHeader.Dup, at)
	p := publish{Topic: pk.TopicName, Payload: pk.Payload, QoS: pk.FixedHeader.Qos, Retained: pk.FixedHeader.Retain,
		Dup: pk.FixedHeader.Dup, PacketID: pk.PacketID, Received: at, ClientID: cl.ID, Username: string(cl.Properties.Username)}
	if pk.Created > 0 {
		p.BrokerTime = time.Unix(pk.Created, 0).UTC()
	}
	if len(pk.Properties.User) > 0 {
		p.UserProps = make(map[string]any, len(pk.Properties.User))
		for _, up := range pk.Properties.User {
			p.UserProps[up.Key] = up.Val
		}
	}
	m := s.dec.message(p)
	s.noteDecode(&m)
	ctx, release := clientContext(h.ctx, cl)
	err := h.em.Emit(ctx, m)
	release()
	if err != nil {
		s.noteDone(1, false)
		if h.ctx.Err() == nil && !cl.Closed() {
			s.log.Warn().Err(err).Str(logging.FieldClientID, cl.ID).Str(logging.FieldTopic, pk.TopicName).
				Msg("emit failed; publish not acknowledged, disconnecting the client so it sends again")
		}
		_ = h.srv.DisconnectClient(cl, packets.ErrImplementationSpecificError)
		return pk, packets.ErrRejectPacket
	}
	s.noteDone(1, true)
	return pk, nil
}

// refuse answers a QoS 1/2 PUBLISH on a topic the source does not ingest
// without acknowledging it (see OnPublish) and returns the error that
// makes mochi drop the packet.
func (h *ingestHook) refuse(cl *mochi.Client, pk packets.Packet) error {
	s := h.s
	s.m.aclDenials.Inc()
	s.log.Warn().Str(logging.FieldUsername, string(cl.Properties.Username)).Str(logging.FieldClientID, cl.ID).
		Str(logging.FieldTopic, pk.TopicName).Str(logging.FieldMethod, "publish").
		Str(logging.FieldReason, "the topic is not one of the source's topics, so the message would not be stored").
		Msg("embedded broker refused a publish: not acknowledged")
	if cl.Properties.ProtocolVersion < 5 {
		_ = h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		return packets.ErrRejectPacket
	}
	typ := packets.Puback
	if pk.FixedHeader.Qos == 2 {
		typ = packets.Pubrec
	}
	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: typ},
		PacketID:    pk.PacketID,
		ReasonCode:  packets.ErrNotAuthorized.Code,
		Properties:  packets.Properties{ReasonString: "topic not ingested by plantgate: " + pk.TopicName},
		Created:     time.Now().Unix(),
	}
	if err := cl.WritePacket(ack); err != nil {
		_ = h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	}
	return packets.ErrRejectPacket
}

// clientContext returns a context that ends with parent or, once the
// Emit has waited a second, when the client's connection closes (a client
// taken over by a reconnect, for example), so a publish waiting for queue
// room does not outlive its connection.
func clientContext(parent context.Context, cl *mochi.Client) (context.Context, func()) {
	ctx, cancel := context.WithCancel(parent)
	done := make(chan struct{})
	t := time.AfterFunc(time.Second, func() {
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				if cl.Closed() {
					cancel()
					return
				}
			}
		}
	})
	return ctx, func() {
		t.Stop()
		close(done)
		cancel()
	}
}

// slogBridge sends mochi's log/slog records to the source's zerolog
// logger. Only errors keep their level: mochi warns about every client
// that drops its connection, and its packet dumps hold payloads, which
// belong at Debug. The hook logs what an operator must see.
type slogBridge struct {
	log   zerolog.Logger
	attrs []slog.Attr
	group string
}

func (b *slogBridge) level(l slog.Level) zerolog.Level {
	if l >= slog.LevelError {
		return zerolog.ErrorLevel
	}
	return zerolog.DebugLevel
}

// Enabled implements slog.Handler.
func (b *slogBridge) Enabled(_ context.Context, l slog.Level) bool {
	return b.log.GetLevel() <= b.level(l)
}

// Handle implements slog.Handler.
func (b *slogBridge) Handle(_ context.Context, r slog.Record) error {
	var sb bytes.Buffer
	write := func(a slog.Attr) {
		if sb.Len() > 0 {
			sb.WriteByte(' ')
		}
		if b.group != "" {
			sb.WriteString(b.group + ".")
		}
		fmt.Fprintf(&sb, "%s=%v", a.Key, a.Value)
	}
	for _, a := range b.attrs {
		write(a)
	}
	r.Attrs(func(a slog.Attr) bool {
		write(a)
		return true
	})
	ev := b.log.WithLevel(b.level(r.Level))
	if sb.Len() > 0 {
		ev = ev.Str(logging.FieldReason, logging.RedactText(sb.String()))
	}
	ev.Msg("embedded broker: " + r.Message)
	return nil
}

// WithAttrs implements slog.Handler.
func (b *slogBridge) WithAttrs(as []slog.Attr) slog.Handler {
	n := *b
	n.attrs = append(append([]slog.Attr(nil), b.attrs...), as...)
	return &n
}

// WithGroup implements slog.Handler.
func (b *slogBridge) WithGroup(name string) slog.Handler {
	n := *b
	n.group = name
	return &n
}

var _ mochi.Hook = (*ingestHook)(nil)
