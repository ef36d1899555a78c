package opcua

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// errSubscriptionGone says the server no longer has the subscription.
var errSubscriptionGone = errors.New("the server no longer has the subscription")

// errWatchdog says the subscription sent neither data nor keep-alives.
var errWatchdog = errors.New("the subscription sent neither data nor keep-alives")

// seqBefore compares sequence numbers, which wrap at 2^32 (and skip 0).
func seqBefore(a, b uint32) bool { return int32(a-b) < 0 }

func nextSeq(s uint32) uint32 {
	s++
	if s == 0 {
		s = 1
	}
	return s
}

// publishLoop keeps one Publish request outstanding, processes each
// notification message in sequence order, and acknowledges it in the next
// request only after its records were committed. A sequence number that
// skips ahead is asked for again with Republish; what the server cannot
// retransmit is recorded as a gap.
func (s *Source) publishLoop(ctx context.Context, c *opcua.Client, em pipeline.Emitter) (bool, error) {
	healthy := false
	stop := s.startCommitter(ctx, em)
	defer stop()
	pending := s.sendPublish(ctx, c, s.takeAcks())
	for ctx.Err() == nil {
		if err := s.retryNodes(ctx, c); err != nil {
			return healthy, err
		}
		if evs := s.engine.Tick(s.now()); len(evs) > 0 {
			msgs := make([]pipeline.Message, len(evs))
			for i, ev := range evs {
				msgs[i] = s.eventMessage(ev)
			}
			if err := s.commit(ctx, em, nil, msgs, nil); err != nil {
				return healthy, err
			}
		}
		var r pubResult
		select {
		case <-ctx.Done():
			return healthy, nil
		case r = <-pending:
		}
		res, err := r.res, r.err
		if err == nil && res.ResponseHeader != nil && res.ResponseHeader.ServiceResult != ua.StatusOK {
			err = res.ResponseHeader.ServiceResult
		}
		if err != nil {
			if ctx.Err() != nil {
				return healthy, nil
			}
			switch {
			case r.timedOut:
				s.mu.Lock()
				s.st.watchdog++
				s.mu.Unlock()
				s.m.watchdog.Inc()
				s.sub.lost = true
				return healthy, fmt.Errorf("%w for %s: rebuilding it", errWatchdog, s.watchdog())
			case errors.Is(err, ua.StatusBadNoSubscription), errors.Is(err, ua.StatusBadSubscriptionIDInvalid):
				s.sub.lost = true
				return healthy, fmt.Errorf("publish: %w (%w)", errSubscriptionGone, err)
			case errors.Is(err, ua.StatusBadSessionIDInvalid), errors.Is(err, ua.StatusBadSessionClosed), errors.Is(err, ua.StatusBadSessionNotActivated):
				s.dropSession = true
				return healthy, fmt.Errorf("publish: the session ended: %w", err)
			case errors.Is(err, ua.StatusBadTooManyPublishRequests), errors.Is(err, ua.StatusBadTimeout):
				pending = s.sendPublish(ctx, c, s.takeAcks())
				continue
			}
			return healthy, fmt.Errorf("publish: %w", err)
		}
		// Ask for the next message at once: the server prepares it while
		// this one is committed. Only one request is outstanding at a time,
		// so responses arrive in order; acknowledgements lag by one.
		pending = s.sendPublish(ctx, c, s.takeAcks())
		healthy = true
		if res.SubscriptionID != s.sub.id || res.NotificationMessage == nil {
			continue
		}
		now := s.now().UTC()
		msg := res.NotificationMessage
		seq := msg.SequenceNumber
		keepAlive := len(msg.NotificationData) == 0
		s.mu.Lock()
		s.st.lastPublishAt = now
		s.mu.Unlock()
		if seqBefore(s.sub.nextSeq, seq) {
			// Notifications between nextSeq and seq went missing (sent on
			// a channel that died, or dropped): ask for them again.
			if err := s.republish(ctx, c, em, s.sub.nextSeq, seq); err != nil {
				return healthy, err
			}
		}
		s.sub.lastAt = now
		if keepAlive {
			// A keep-alive carries the number the next message will have.
			if seqBefore(s.sub.nextSeq, seq) {
				s.sub.nextSeq = seq
			}
			s.setNextSeq()
			continue
		}
		if seqBefore(seq, s.sub.nextSeq) {
			// Already processed (retransmitted earlier): acknowledge only.
			if err := s.commit(ctx, em, nil, nil, &ua.SubscriptionAcknowledgement{SubscriptionID: s.sub.id, SequenceNumber: seq}); err != nil {
				return healthy, err
			}
			continue
		}
		if err := s.process(ctx, em, msg); err != nil {
			return healthy, err
		}
		s.sub.nextSeq = nextSeq(seq)
		s.setNextSeq()
	}
	return healthy, nil
}

type pubResult struct {
	res      *ua.PublishResponse
	err      error
	timedOut bool
}

// sendPublish sends a Publish request and delivers its outcome on the
// returned channel; it times out after the watchdog period.
func (s *Source) sendPublish(ctx context.Context, c *opcua.Client, acks []*ua.SubscriptionAcknowledgement) <-chan pubResult {
	ch := make(chan pubResult, 1)
	wd := s.watchdog()
	go func() {
		wctx, cancel := context.WithTimeout(ctx, wd)
		defer cancel()
		var res *ua.PublishResponse
		err := c.Send(wctx, &ua.PublishRequest{SubscriptionAcknowledgements: acks}, func(v ua.Response) error {
			r, ok := v.(*ua.PublishResponse)
			if !ok {
				return fmt.Errorf("unexpected %T", v)
			}
			res = r
			return nil
		})
		ch <- pubResult{res: res, err: err, timedOut: errors.Is(wctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil}
	}()
	return ch
}

func (s *Source) setNextSeq() {
	s.mu.Lock()
	s.st.nextSeq = s.sub.nextSeq
	s.mu.Unlock()
}

// process turns one notification message into records and commits them;
// its acknowledgement goes out with a Publish request after the commit.
func (s *Source) process(ctx context.Context, em pipeline.Emitter, msg *ua.NotificationMessage) error {
	var msgs []pipeline.Message
	var states []pipeline.StateWrite
	n := 0
	for _, eo := range msg.NotificationData {
		if eo == nil {
			continue
		}
		switch d := eo.Value.(type) {
		case *ua.DataChangeNotification:
			for _, mi := range d.MonitoredItems {
				h := int(mi.ClientHandle)
				if h < 1 || h > len(s.items) {
					continue
				}
				m, st := s.sample(s.items[h-1], mi.Value, false)
				msgs = append(msgs, m...)
				states = append(states, st...)
				n++
			}
		case *ua.StatusChangeNotification:
			s.log.Warn().Str("status", d.Status.Error()).Msg("opcua: the server changed the subscription's status")
			if uint32(d.Status)&0x80000000 != 0 {
				s.sub.lost = true
			}
		}
	}
	s.mu.Lock()
	s.st.notifications += int64(n)
	s.st.messages++
	s.mu.Unlock()
	s.log.Debug().Uint32("seq", msg.SequenceNumber).Int("values", n).Int("records", len(msgs)).Msg("opcua: notification message")
	return s.commit(ctx, em, states, msgs, &ua.SubscriptionAcknowledgement{SubscriptionID: s.sub.id, SequenceNumber: msg.SequenceNumber})
}

// republish asks the server for the notification messages from..to-1
// (to 0: all it still has from from on), processes them in order, and
// returns their acknowledgements. What it cannot get back is recorded as
// a gap.
func (s *Source) republish(ctx context.Context, c *opcua.Client, em pipeline.Emitter, from, to uint32) error {
	var lost []uint32
	var why error
	seq := from
	for i := 0; i < 1_000_000 && (to == 0 || seqBefore(seq, to)); i++ {
		var res *ua.RepublishResponse
		err := c.Send(s.callCtx(ctx), &ua.RepublishRequest{SubscriptionID: s.sub.id, RetransmitSequenceNumber: seq}, func(v ua.Response) error {
			r, ok := v.(*ua.RepublishResponse)
			if !ok {
				return fmt.Errorf("unexpected %T", v)
			}
			res = r
			return nil
		})
		if err == nil && res.ResponseHeader != nil && res.ResponseHeader.ServiceResult != ua.StatusOK {
			err = res.ResponseHeader.ServiceResult
		}
		s.log.Debug().Uint32("seq", seq).AnErr("result", err).Msg("opcua: republish")
		var code ua.StatusCode
		if errors.As(err, &code) {
			switch {
			case code == ua.StatusBadMessageNotAvailable && to == 0:
				// Nothing more was sent while the connection was down.
				return s.emitGap(ctx, em, lost, why)
			case code == ua.StatusBadSubscriptionIDInvalid || code == ua.StatusBadNoSubscription:
				s.sub.lost = true
				return errSubscriptionGone
			case code == ua.StatusBadMessageNotAvailable:
				lost = append(lost, seq)
				why = code
				seq = nextSeq(seq)
				continue
			default:
				// Republish unsupported or refused: the rest is lost.
				why = code
				if to == 0 {
					return s.emitGap(ctx, em, lost, why)
				}
				for ; seqBefore(seq, to); seq = nextSeq(seq) {
					lost = append(lost, seq)
				}
				return s.emitGap(ctx, em, lost, why)
			}
		}
		if err != nil {
			return fmt.Errorf("republish %d: %w", seq, err)
		}
		msg := res.NotificationMessage
		if msg == nil || len(msg.NotificationData) == 0 {
			seq = nextSeq(seq)
			continue
		}
		if err := s.process(ctx, em, msg); err != nil {
			return err
		}
		s.mu.Lock()
		s.st.republished++
		s.mu.Unlock()
		s.m.republished.Inc()
		seq = nextSeq(msg.SequenceNumber)
		s.sub.nextSeq = seq
	}
	if seqBefore(s.sub.nextSeq, seq) {
		s.sub.nextSeq = seq
	}
	return s.emitGap(ctx, em, lost, why)
}

// emitGap records the sequence numbers the server could not retransmit.
// It returns an error only when the gap record could not be committed.
func (s *Source) emitGap(ctx context.Context, em pipeline.Emitter, lost []uint32, why error) error {
	if len(lost) == 0 {
		return nil
	}
	last := lost[len(lost)-1]
	if seqBefore(s.sub.nextSeq, nextSeq(last)) {
		s.sub.nextSeq = nextSeq(last)
	}
	seqs := fmt.Sprintf("%d", lost[0])
	if len(lost) > 1 {
		seqs = fmt.Sprintf("%d-%d", lost[0], last)
	}
	g := Gap{Start: s.sub.lastAt, End: s.now().UTC(), Sequences: seqs, Reason: fmt.Sprintf("the server could not send notifications %s again (Republish: %v)", seqs, why)}
	if !s.lostAt.IsZero() && s.lostAt.Before(g.Start) {
		g.Start = s.lostAt
	}
	return s.commit(ctx, em, nil, []pipeline.Message{s.recordGap(g)}, nil)
}

// retryNodes resolves and monitors again the nodes that failed before,
// once their retry time has come.
func (s *Source) retryNodes(ctx context.Context, c *opcua.Client) error {
	now := s.now()
	var due []*item
	unresolved := false
	for _, it := range s.items {
		if it.monID == 0 && now.After(it.retryAt) {
			due = append(due, it)
			unresolved = unresolved || it.id == nil
		}
	}
	if len(due) == 0 {
		return nil
	}
	if unresolved {
		ns, err := c.NamespaceArray(s.callCtx(ctx))
		if err != nil {
			return fmt.Errorf("read the namespace table: %w", err)
		}
		for _, it := range due {
			if it.id != nil {
				continue
			}
			id, err := it.ref.Resolve(ns)
			s.mu.Lock()
			if err != nil {
				s.nodeErrLocked(it, err.Error())
			} else {
				it.id, it.resolved = id, id.String()
			}
			s.mu.Unlock()
		}
	}
	for _, it := range due {
		it.retryAt = now.Add(s.cfg.RetryNodes)
	}
	if s.sub == nil {
		return nil
	}
	return s.monitor(ctx, c, due)
}

// poll reads every node each poll_interval and feeds the values that
// changed (value or quality) to the rules.
func (s *Source) poll(ctx context.Context, c *opcua.Client, em pipeline.Emitter) (bool, error) {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	last := map[*item]string{}
	healthy := false
	for {
		var todo []*item
		for _, it := range s.items {
			if it.id != nil {
				todo = append(todo, it)
			}
		}
		var msgs []pipeline.Message
		var states []pipeline.StateWrite
		for len(todo) > 0 {
			n := min(len(todo), maxPerCall)
			chunk := todo[:n]
			todo = todo[n:]
			ids := make([]*ua.ReadValueID, len(chunk))
			for i, it := range chunk {
				ids[i] = &ua.ReadValueID{NodeID: it.id, AttributeID: ua.AttributeIDValue}
			}
			res, err := c.Read(s.callCtx(ctx), &ua.ReadRequest{NodesToRead: ids, TimestampsToReturn: ua.TimestampsToReturnBoth})
			if err != nil {
				if ctx.Err() != nil {
					return healthy, nil
				}
				// The chunks read before are in the rules' state: commit them.
				if eerr := s.emit(ctx, em, states, msgs); eerr != nil {
					return healthy, nil // only a stop ends emit
				}
				return healthy, fmt.Errorf("poll: %w", err)
			}
			for i, it := range chunk {
				if i >= len(res.Results) || res.Results[i] == nil {
					continue
				}
				dv := res.Results[i]
				var v any
				if dv.Value != nil {
					v = dv.Value.Value()
				}
				sig := fmt.Sprintf("%v|%v", dv.Status, v)
				if last[it] == sig {
					continue
				}
				last[it] = sig
				m, st := s.sample(it, dv, true)
				msgs = append(msgs, m...)
				states = append(states, st...)
			}
		}
		healthy = true
		for _, ev := range s.engine.Tick(s.now()) {
			msgs = append(msgs, s.eventMessage(ev))
		}
		if err := s.emit(ctx, em, states, msgs); err != nil {
			return healthy, nil
		}
		s.mu.Lock()
		s.st.lastPublishAt = s.now().UTC()
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return healthy, nil
		case <-t.C:
		}
	}
}

func pemDecode(b []byte) ([]byte, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("not PEM")
	}
	return blk.Bytes, nil
}

// batch is one commit of the committer: records, rule state and the
// acknowledgement to send once they are durable.
type batch struct {
	states []pipeline.StateWrite
	msgs   []pipeline.Message
	ack    *ua.SubscriptionAcknowledgement
}

// startCommitter runs the commits of the publish loop in a goroutine of
// their own, in order, so the next notification message is decoded while
// the queue fsyncs the last one. The channel is small: a slow queue stops
// the Publish requests, and the server keeps the values. stop waits until
// everything handed over is committed (or ctx ended).
func (s *Source) startCommitter(ctx context.Context, em pipeline.Emitter) (stop func()) {
	ch := make(chan batch, 2)
	done := make(chan struct{})
	s.commitCh = ch
	go func() {
		defer close(done)
		for b := range ch {
			if ctx.Err() != nil {
				continue // stopping: nothing more is committed or acknowledged
			}
			if err := s.emit(ctx, em, b.states, b.msgs); err != nil {
				continue
			}
			if b.ack != nil {
				s.ackMu.Lock()
				s.acked = append(s.acked, b.ack)
				s.ackMu.Unlock()
			}
		}
	}()
	return func() {
		s.commitCh = nil
		close(ch)
		<-done
	}
}

// commit hands a batch to the committer, or commits it at once when no
// publish loop runs.
func (s *Source) commit(ctx context.Context, em pipeline.Emitter, states []pipeline.StateWrite, msgs []pipeline.Message, ack *ua.SubscriptionAcknowledgement) error {
	if s.commitCh != nil {
		select {
		case s.commitCh <- batch{states: states, msgs: msgs, ack: ack}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := s.emit(ctx, em, states, msgs); err != nil {
		return err
	}
	if ack != nil {
		s.ackMu.Lock()
		s.acked = append(s.acked, ack)
		s.ackMu.Unlock()
	}
	return nil
}

// takeAcks returns the acknowledgements of committed messages not yet sent.
func (s *Source) takeAcks() []*ua.SubscriptionAcknowledgement {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	a := s.acked
	s.acked = nil
	return a
}
