package mqtt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/backoff"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
)

const (
	// handlerPoll is how often a handler blocked on a full window checks
	// whether its connection is being closed. paho reports a lost
	// connection only after the handler returned, so it has to look.
	handlerPoll = 50 * time.Millisecond
	// disconnectQuiesce is how long Disconnect waits for the DISCONNECT
	// packet to leave.
	disconnectQuiesce = 250
)

// errPaused is the status error while ingest is paused.
var errPaused = errors.New("ingest paused: the queue has no room")

// inbound is one message in the in-flight window.
type inbound struct {
	msg paho.Message
	at  time.Time
}

// session is one Run of client mode.
//
//	paho router goroutine --onMessage--> in (bounded, MaxInFlight)
//	                                      |
//	writer: up to BatchMax or until in is empty -> Emit (fsync) -> Ack each, in order
//	manage: connect with backoff; pause (disconnect) when an Emit waits longer
//	        than PauseAfter; reconnect when it returned
type session struct {
	s  *Source
	in chan inbound
	// slots holds a token for every message between onMessage and its
	// acknowledgement or release, wherever it is (window, decode, emit,
	// ack), so at most MaxInFlight messages are in memory; a handler
	// that gets none blocks paho, which stops reading from the broker.
	slots chan struct{}
	stop  chan struct{} // closed when Run ends; blocked handlers give their message back
	// emitStart is the unix nano time the current Emit began, 0 between.
	emitStart atomic.Int64
	emitDone  chan struct{} // kicked (cap 1) when an Emit returns
	// spareBatches and spareMsgs take back the slices of batches the
	// emit and ack stages are done with, for the decode stage to fill
	// again instead of allocating two slices of batch_max a batch.
	spareBatches chan []inbound
	spareMsgs    chan []pipeline.Message
}

// give puts a slice back for reuse, cleared so it holds on to nothing; a
// slice no one has room for is left to the collector.
func give[T any](spare chan []T, s []T) {
	clear(s)
	select {
	case spare <- s[:0]:
	default:
	}
}

// take reuses a slice given back, or makes one of capacity n.
func take[T any](spare chan []T, n int) []T {
	select {
	case s := <-spare:
		return s
	default:
		return make([]T, 0, n)
	}
}

func (s *Source) runClient(ctx context.Context, em pipeline.Emitter) error {
	if s.cfg.TLS.InsecureSkipVerify {
		s.log.Warn().Str(logging.FieldURL, s.cfg.Broker).
			Msg("tls insecure_skip_verify is on: the broker certificate is not checked and the connection can be intercepted")
	}
	ss := &session{s: s, in: make(chan inbound, s.cfg.MaxInFlight), slots: make(chan struct{}, s.cfg.MaxInFlight),
		stop: make(chan struct{}), emitDone: make(chan struct{}, 1),
		spareBatches: make(chan []inbound, 4), spareMsgs: make(chan []pipeline.Message, 4)}
	wctx, cancelWriter := context.WithCancel(ctx)
	defer cancelWriter()
	wdone := make(chan struct{})
	var werr error
	go func() {
		defer close(wdone)
		werr = ss.writer(wctx, em)
	}()
	ss.manage(ctx, wdone)
	cancelWriter()
	<-wdone
	ss.giveBack()
	s.setConnected(false, nil)
	s.setPaused(false)
	if werr != nil && ctx.Err() == nil {
		return werr
	}
	return nil
}

// manage owns the connection: it connects with backoff, lets paho
// reconnect after a network loss, and pauses ingest (disconnects, so the
// broker holds new messages in the persistent session) while the queue
// has no room. It returns when ctx ends or the writer stopped; by then the
// client is disconnected and stop is closed.
func (ss *session) manage(ctx context.Context, wdone <-chan struct{}) {
	s := ss.s
	defer func() {
		select {
		case <-ss.stop:
		default:
			close(ss.stop)
		}
	}()
	poll := min(s.cfg.PauseAfter/4, 250*time.Millisecond)
	tick := time.NewTicker(max(poll, 5*time.Millisecond))
	defer tick.Stop()
	for {
		cl, ok := ss.connect(ctx, wdone)
		if !ok {
			return
		}
		for stalled := false; !stalled; {
			select {
			case <-ctx.Done():
				ss.disconnect(cl)
				return
			case <-wdone:
				ss.disconnect(cl)
				return
			case <-tick.C:
				stalled = ss.stalledFor() > s.cfg.PauseAfter
			}
		}
		s.log.Warn().Dur(logging.FieldDuration, ss.stalledFor()).
			Msg("queue has no room: pausing ingest; the broker keeps new messages in the session until it frees")
		s.setPaused(true)
		cl.Disconnect(disconnectQuiesce)
		s.setConnected(false, errPaused)
		ss.giveBack() // the broker redelivers them after the reconnect
		for ss.stalledFor() > 0 {
			select {
			case <-ctx.Done():
				return
			case <-wdone:
				return
			case <-ss.emitDone:
			case <-tick.C:
			}
		}
		s.setPaused(false)
		s.log.Info().Msg("queue has room again: resuming ingest")
	}
}

// connect makes a new paho client and connects it, retrying with backoff.
// It reports false when ctx ended or the writer stopped first.
func (ss *session) connect(ctx context.Context, wdone <-chan struct{}) (paho.Client, bool) {
	s := ss.s
	pol := backoff.Policy{Initial: s.cfg.ReconnectInitial, Max: s.cfg.ReconnectMax}
	for attempt := 1; ; attempt++ {
		cl := paho.NewClient(ss.options())
		tok := cl.Connect()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			cl.Disconnect(0)
			return nil, false
		case <-wdone:
			cl.Disconnect(0)
			return nil, false
		}
		err := tok.Error()
		if err == nil {
			return cl, true
		}
		s.setConnected(false, err)
		d := pol.Delay(attempt)
		lvl := zerolog.DebugLevel
		if attempt == 1 || attempt%10 == 0 {
			lvl = zerolog.WarnLevel // not every attempt of a long outage
		}
		s.log.WithLevel(lvl).Err(err).Str(logging.FieldURL, s.cfg.Broker).Int(logging.FieldAttempt, attempt).Dur(logging.FieldRetryIn, d).
			Msg("connect to broker")
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, false
		case <-wdone:
			t.Stop()
			return nil, false
		case <-t.C:
		}
	}
}

func (ss *session) disconnect(cl paho.Client) {
	select {
	case <-ss.stop:
	default:
		close(ss.stop)
	}
	cl.Disconnect(disconnectQuiesce)
	ss.s.setConnected(false, nil)
}

func (ss *session) options() *paho.ClientOptions {
	c := &ss.s.cfg
	o := paho.NewClientOptions().AddBroker(c.Broker).SetClientID(c.ClientID).
		SetProtocolVersion(4).
		// The persistent session keeps subscriptions and unacknowledged
		// messages while plantgate is away.
		SetCleanSession(false).
		// Acknowledge only after the queue commit.
		SetAutoAckDisabled(true).
		// One router goroutine calls the handler in order; when the window
		// is full the handler blocks it, paho stops reading the socket and
		// TCP pushes back on the broker.
		SetOrderMatters(true).
		SetKeepAlive(c.KeepAlive).SetConnectTimeout(c.ConnectTimeout).SetWriteTimeout(c.ConnectTimeout).
		SetAutoReconnect(true).SetMaxReconnectInterval(c.ReconnectMax).SetConnectRetry(false).
		// Subscriptions are sent again on every connect (a broker that
		// lost its state has none), so paho need not remember them.
		SetResumeSubs(false).
		SetCustomOpenConnectionFn(openConnection).
		SetDefaultPublishHandler(ss.onMessage).
		SetOnConnectHandler(ss.onConnect).
		SetConnectionLostHandler(ss.onLost).
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
			ss.s.log.Debug().Str(logging.FieldURL, c.Broker).Msg("reconnecting to broker")
		})
	if c.Username != "" {
		o.SetUsername(c.Username)
	}
	if !c.Password.IsZero() {
		o.SetPassword(c.Password.Reveal())
	}
	if ss.s.tls != nil {
		o.SetTLSConfig(ss.s.tls)
	}
	return o
}

// onMessage is paho's handler. It must not block paho for long: it puts
// the message in the window and returns. When max_in_flight messages are
// between here and their acknowledgement it waits (which stops paho
// reading from the broker) until one is acknowledged, the
// connection is closing or Run ends; in the last two cases the message is
// left unacknowledged, so the broker redelivers it.
func (ss *session) onMessage(c paho.Client, m paho.Message) {
	s := ss.s
	at := s.now().UTC()
	s.noteReceived(m.Topic(), m.Payload(), m.Duplicate(), at)
	p := inbound{msg: m, at: at}
	if !ss.acquire(c) {
		ss.note(p)
		return
	}
	ss.in <- p // never blocks: it holds fewer messages than there are slots
}

// acquire takes a slot for a message, waiting while all are taken. It
// gives up (false) when Run ends or the connection is lost, since the
// broker then redelivers the message.
func (ss *session) acquire(c paho.Client) bool {
	select {
	case ss.slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTicker(handlerPoll)
	defer t.Stop()
	for {
		select {
		case ss.slots <- struct{}{}:
			return true
		case <-ss.stop:
			return false
		case <-t.C:
			if !c.IsConnectionOpen() {
				return false
			}
		}
	}
}

// release gives one message back unacknowledged.
func (ss *session) release(p inbound) {
	ss.note(p)
	<-ss.slots
}

// note counts a message given back unacknowledged.
func (ss *session) note(p inbound) {
	if p.msg.Qos() == 0 {
		ss.s.qos0Lost.Add(1)
		ss.s.m.qos0Lost.Inc()
	}
	ss.s.noteDone(1, false)
}

// giveBack releases every message waiting in the window.
func (ss *session) giveBack() {
	for {
		select {
		case p := <-ss.in:
			ss.release(p)
		default:
			return
		}
	}
}

func (ss *session) onConnect(c paho.Client) {
	s := ss.s
	s.mu.Lock()
	s.subs = nil // until the SUBACK of this connection
	s.mu.Unlock()
	s.setConnected(true, nil)
	s.log.Info().Str(logging.FieldURL, s.cfg.Broker).Str(logging.FieldClientID, s.cfg.ClientID).Msg("connected to broker")
	filters := make(map[string]byte, len(s.cfg.Topics))
	for _, t := range s.cfg.Topics {
		filters[t.Filter] = t.qos(s.cfg.QoS)
	}
	tok := c.SubscribeMultiple(filters, nil)
	if !tok.WaitTimeout(s.cfg.ConnectTimeout) {
		// The SUBACK may sit behind messages waiting for room.
		s.log.Warn().Msg("subscription not confirmed in time; it stays in place once the broker processed it")
		return
	}
	if err := tok.Error(); err != nil {
		if !c.IsConnectionOpen() {
			// Lost or paused meanwhile; the next connect subscribes again.
			s.log.Debug().Err(err).Msg("subscribe")
			return
		}
		s.log.Error().Err(err).Msg("subscribe")
		s.setConnected(true, err)
		return
	}
	granted := map[string]int{}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for f, q := range st.Result() {
			granted[f] = int(q)
			if q == 0x80 {
				s.log.Error().Str(logging.FieldTopic, f).Msg("broker refused the subscription (check its ACL)")
			} else if q < filters[f] {
				s.log.Warn().Str(logging.FieldTopic, f).Int(logging.FieldStatus, int(q)).Msg("broker granted a lower QoS than asked")
			}
		}
	}
	s.mu.Lock()
	s.subs = granted
	s.mu.Unlock()
}

func (ss *session) onLost(_ paho.Client, err error) {
	s := ss.s
	s.connLosses.Add(1)
	s.m.connLosses.Inc()
	s.setConnected(false, err)
	s.log.Warn().Err(err).Str(logging.FieldURL, s.cfg.Broker).Msg("connection to broker lost; reconnecting")
}

func (ss *session) stalledFor() time.Duration {
	ns := ss.emitStart.Load()
	if ns == 0 {
		return 0
	}
	return time.Since(time.Unix(0, ns))
}

// decodedBatch is a batch of messages from the window and what they
// decoded to.
type decodedBatch struct {
	batch []inbound
	msgs  []pipeline.Message
}

// writer moves messages from the window into the queue in three stages,
// each its own goroutine, so that one batch's commit overlaps the next
// batch's decoding and the acknowledgements of the one before:
//
//	decode: take messages from the window and decode them, until the
//	        emit stage takes the batch or it holds batch_max
//	emit:   Emit the batch (one commit), this goroutine
//	ack:    acknowledge each committed message, in order
//
// Every stage handles batches in the order they left the window, so the
// queue keeps the broker's order and the broker gets its PUBACKs in the
// order it sent the messages [MQTT-4.6.0-2]. writer returns nil when ctx
// ends, or Emit's error; by then every committed message was
// acknowledged and every other one released.
func (ss *session) writer(ctx context.Context, em pipeline.Emitter) error {
	dctx, stopDecode := context.WithCancel(ctx)
	defer stopDecode()
	decoded := make(chan decodedBatch)
	committed := make(chan []inbound, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(decoded)
		ss.decodeStage(dctx, decoded)
	}()
	go func() {
		defer wg.Done()
		ss.ackStage(committed)
	}()
	var err error
	failed := false
	for d := range decoded {
		if failed {
			ss.releaseAll(d.batch)
			continue
		}
		ss.emitStart.Store(time.Now().UnixNano())
		eerr := em.Emit(ctx, d.msgs...)
		ss.emitStart.Store(0)
		give(ss.spareMsgs, d.msgs) // Emit keeps no reference to the slice
		select {
		case ss.emitDone <- struct{}{}:
		default:
		}
		if eerr != nil {
			ss.releaseAll(d.batch)
			err = emitError(ctx, eerr, len(d.batch))
			failed = true
			stopDecode() // it releases what it holds; the rest stays in the window
			continue
		}
		committed <- d.batch
	}
	close(committed)
	wg.Wait()
	return err
}

// decodeStage takes messages from the window and decodes each as it
// comes. It offers the batch to the emit stage from its first message on
// and keeps adding to it (up to batch_max) while the emit stage is busy,
// so a slow commit makes the next one larger, not later.
func (ss *session) decodeStage(ctx context.Context, out chan<- decodedBatch) {
	s := ss.s
	max := s.cfg.BatchMax
	batch, msgs := take(ss.spareBatches, max), take(ss.spareMsgs, max)
	add := func(p inbound) {
		m := s.dec.message(publish{Topic: p.msg.Topic(), Payload: p.msg.Payload(), QoS: p.msg.Qos(), Retained: p.msg.Retained(),
			Dup: p.msg.Duplicate(), PacketID: p.msg.MessageID(), Received: p.at})
		s.noteDecode(&m)
		batch = append(batch, p)
		msgs = append(msgs, m)
	}
	for {
		in, send := ss.in, out
		if len(batch) == 0 {
			send = nil
		}
		if len(batch) >= max {
			in = nil
		}
		select {
		case <-ctx.Done():
			ss.releaseAll(batch)
			return
		case p := <-in:
			add(p)
		case send <- decodedBatch{batch: batch, msgs: msgs}:
			batch, msgs = take(ss.spareBatches, max), take(ss.spareMsgs, max)
		}
	}
}

// ackStage acknowledges the messages of each committed batch, in order.
func (ss *session) ackStage(in <-chan []inbound) {
	for batch := range in {
		for _, p := range batch {
			if p.msg.Qos() > 0 {
				p.msg.Ack()
			}
			<-ss.slots
		}
		ss.s.noteDone(len(batch), true)
		give(ss.spareBatches, batch)
	}
}

// releaseAll gives back the messages of a batch unacknowledged.
func (ss *session) releaseAll(batch []inbound) {
	for _, p := range batch {
		ss.release(p)
	}
}

// emitError is what the writer returns after a failed Emit: nil when Run
// is ending (the messages stay unacknowledged for the broker to redeliver),
// else the error.
func emitError(ctx context.Context, err error, n int) error {
	if ctx.Err() != nil {
		return nil //nolint:nilerr // a cancelled Run is a clean stop; nothing was acknowledged
	}
	return fmt.Errorf("emit %d messages (left unacknowledged for the broker to redeliver): %w", n, err)
}
