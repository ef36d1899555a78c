package opcua

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/backoff"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/rules"
	"github.com/plantgate/plantgate/plugins/inputs"
)

// SampleConfig is the plugin's annotated sample.
//
//go:embed sample.yaml
var SampleConfig string

func init() {
	inputs.Add(pipeline.SourceFactory{
		Type:      "opcua",
		NewConfig: func() any { return &Config{} },
		New: func(cfg any, env pipeline.Env) (pipeline.Source, error) {
			return New(cfg.(*Config), env)
		},
		// Counter events are committed with their state and never come
		// twice; change and edge events start from the first value after
		// a start. Value records may: after a restart the current values
		// are read and recorded again.
		Redelivers: func(cfg any) bool { return cfg.(*Config).EmitValues },
	})
}

// Message kinds, in meta.kind.
const (
	KindEvent = "event"
	KindValue = "value"
	KindGap   = "gap"
)

// Source is the opcua source.
type Source struct {
	cfg    Config
	name   string
	log    zerolog.Logger
	state  pipeline.StateStore
	pki    PKI
	appURI string
	rules  []rules.Rule
	items  []*item // by name; an item's client handle is its index + 1
	byName map[string]*item
	now    func() time.Time

	// Only the Run goroutine touches these.
	engine  *rules.Engine
	session *opcua.Session // kept across a lost connection, to reactivate
	sub     *subscription
	lostAt  time.Time // when the last connection was lost
	// readAt is when this Run last committed a read of every value; a
	// connection lost after it and before its subscription existed is a
	// gap too.
	readAt time.Time
	// dropSession says the server ended the session: do not reactivate it.
	dropSession bool
	// commitCh feeds the publish loop's committer (nil when none runs).
	commitCh chan batch
	ackMu    sync.Mutex
	// acked are acknowledgements of committed notification messages, for
	// the next Publish request. A new session or subscription clears them.
	acked []*ua.SubscriptionAcknowledgement

	m *sourceMetrics

	mu sync.Mutex // guards the status fields below and in items
	st status
}

type item struct {
	name   string
	cfg    *Node
	ref    NodeRef
	handle uint32 // the client handle: index in Source.items + 1

	// Run goroutine only.
	id      *ua.NodeID
	monID   uint32
	retryAt time.Time
	// lastSrc is the source time of the newest good sample, lastSrcValue
	// its value.
	lastSrc      time.Time
	lastSrcValue any

	// Guarded by Source.mu.
	resolved  string
	monitored bool
	lastAt    time.Time
	lastValue any
	quality   string
	lastErr   string
	lastErrAt time.Time
	changes   int64
}

type subscription struct {
	id         uint32
	nextSeq    uint32
	interval   time.Duration
	keepAlive  uint32
	namespaces []string
	lastAt     time.Time // last publish response (data or keep-alive)
	// lost says the subscription is gone or dead: create it again.
	lost bool
}

// Gap is a stretch of time in which values may have changed unseen: the
// subscription was lost (the server restarted) or notifications could not
// be retransmitted.
type Gap struct {
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Items  []string  `json:"items"`
	Reason string    `json:"reason"`
	// Sequences are the notification sequence numbers lost, if known.
	Sequences string `json:"sequences,omitempty"`
}

type status struct {
	state, policy, mode         string
	connectedAt, lastPublishAt  time.Time
	lastErr                     string
	lastErrAt                   time.Time
	connects, restores, created int64
	subsCreated, republished    int64
	watchdog                    int64
	notifications, events       int64
	messages                    int64 // notification messages processed, each sequence number once
	values                      int64
	subID                       uint32
	nextSeq                     uint32
	gaps                        []Gap
	gapCount                    int64
	ruleErr                     map[string]string
	ruleEvents                  map[string]int64
	ownCert, serverCert         *x509.Certificate
	serverFP                    string
	offered                     string
}

// New builds an opcua source; it opens nothing until Run.
func New(cfg *Config, env pipeline.Env) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rs, err := cfg.rules()
	if err != nil {
		return nil, err
	}
	s := &Source{cfg: *cfg, name: env.Name, log: env.Log, state: env.State, rules: rs, byName: map[string]*item{}, now: env.Now, m: newMetrics(env.Metrics, env.Name)}
	if s.now == nil {
		s.now = time.Now
	}
	dir := env.DataDir
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "plantgate-opcua-"+env.Name)
	}
	s.pki = PKI{Dir: filepath.Join(dir, "pki")}
	s.appURI = cfg.ApplicationURI
	if s.appURI == "" {
		gw := env.GatewayID
		if gw == "" {
			gw = "gateway"
		}
		s.appURI = "urn:plantgate:" + gw + ":" + env.Name
	}
	for _, name := range sortedKeys(cfg.Nodes) {
		ref, _ := ParseNodeRef(cfg.Nodes[name].Node)
		it := &item{name: name, cfg: cfg.Nodes[name], ref: ref, handle: uint32(len(s.items) + 1)}
		s.items = append(s.items, it)
		s.byName[name] = it
	}
	s.st.state = "stopped"
	s.st.ruleErr = map[string]string{}
	s.st.ruleEvents = map[string]int64{}
	return s, nil
}

// PKIDir is where a source named name keeps its certificates under the
// gateway's data dir (the plugin data dir the gateway gives a source).
func PKIDir(dataDir, name string) string { return filepath.Join(dataDir, "sources", name, "pki") }

// Run connects, subscribes and emits until ctx ends.
func (s *Source) Run(ctx context.Context, em pipeline.Emitter) error {
	load := func(name string) ([]byte, error) {
		if s.state == nil {
			return nil, nil
		}
		b, ok, err := s.state.Get(name)
		if !ok {
			return nil, err
		}
		return b, err
	}
	eng, err := rules.New(s.rules, load)
	if err != nil {
		return err
	}
	s.engine = eng
	_, _, own, err := s.pki.OwnCertificate(s.appURI)
	if err != nil {
		return fmt.Errorf("application certificate: %w", err)
	}
	s.mu.Lock()
	s.st.ownCert = own
	s.mu.Unlock()
	s.m.ownExpiry.Set(float64(own.NotAfter.Unix()))
	pol := backoff.Policy{Initial: s.cfg.ReconnectInitial, Max: s.cfg.ReconnectMax}
	fails := 0
	for ctx.Err() == nil {
		// An error ends one connection; the source reports it and
		// connects again, until ctx ends (a clean stop).
		healthy, err := s.runOnce(ctx, em)
		if ctx.Err() != nil {
			break
		}
		if healthy {
			fails = 0
		}
		s.setState("disconnected")
		if err != nil {
			s.fail(err)
		}
		if s.lostAt.IsZero() {
			s.lostAt = s.now().UTC()
		}
		if backoff.Wait(ctx, pol.Delay(fails)) != nil {
			break
		}
		fails++
	}
	s.setState("stopped")
	return nil //nolint:nilerr // connection errors are reported in status and retried, not returned
}

func (s *Source) setState(st string) {
	s.mu.Lock()
	s.st.state = st
	s.mu.Unlock()
	if st == "connected" {
		s.m.connected.Set(1)
	} else {
		s.m.connected.Set(0)
	}
}

func (s *Source) fail(err error) {
	s.mu.Lock()
	s.st.lastErr = err.Error()
	s.st.lastErrAt = s.now().UTC()
	s.mu.Unlock()
	s.log.Warn().Err(err).Str("endpoint", s.cfg.Endpoint).Msg("opcua: connection failed or lost; retrying")
}

// runOnce makes one connection and serves it until it fails. healthy
// reports that data flowed, so the next attempt waits the least.
func (s *Source) runOnce(ctx context.Context, em pipeline.Emitter) (healthy bool, err error) {
	s.setState("connecting")
	c, restored, err := s.connect(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		if ctx.Err() != nil {
			// Stopping: end the session and its subscription on the server.
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if s.sub != nil {
				_ = c.Send(cctx, &ua.DeleteSubscriptionsRequest{SubscriptionIDs: []uint32{s.sub.id}}, func(ua.Response) error { return nil })
			}
			_ = c.Close(cctx)
			cancel()
			s.session, s.sub, s.readAt = nil, nil, time.Time{}
			return
		}
		// Lost: keep the session to reactivate it on a new channel,
		// unless the server ended it.
		sess, _ := c.DetachSession(ctx)
		if sess != nil && !s.dropSession {
			s.session = sess
		}
		s.dropSession = false
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = c.Close(cctx)
		cancel()
	}()
	ns, err := c.NamespaceArray(s.callCtx(ctx))
	if err != nil {
		return false, fmt.Errorf("read the namespace table: %w", err)
	}
	s.resolve(ns)
	s.mu.Lock()
	s.st.state = "connected"
	s.st.connectedAt = s.now().UTC()
	s.st.connects++
	if restored {
		s.st.restores++
	} else {
		s.st.created++
	}
	s.mu.Unlock()
	s.m.connected.Set(1)
	s.m.connects.Inc()
	s.log.Info().Str("endpoint", s.cfg.Endpoint).Bool("session_reactivated", restored).Bool("subscription_kept", s.sub != nil && !s.sub.lost).Str("policy", s.st.policy).Str("mode", s.st.mode).Msg("opcua: connected")
	if s.cfg.Mode == "poll" {
		return s.poll(ctx, c, em)
	}
	needCreate := !restored || s.sub == nil || s.sub.lost || !equalStrings(ns, s.sub.namespaces)
	if !needCreate {
		// The session survived: the subscription should have too. Ask for
		// what was sent while the connection was down.
		err = s.republish(ctx, c, em, s.sub.nextSeq, 0)
		if errors.Is(err, errSubscriptionGone) {
			needCreate = true
		} else if err != nil {
			return false, err
		}
	}
	if needCreate {
		var gap *Gap
		if s.sub == nil && !s.readAt.IsZero() {
			gap = &Gap{Start: s.readAt, Reason: "the connection was lost after the values were read and before the subscription was created; a new session and subscription were created"}
		}
		if s.sub != nil {
			gap = &Gap{Start: s.sub.lastAt, Reason: "the subscription was lost and was created again"}
			if !restored {
				gap.Reason = "the session was lost (server restart or session timeout); a new session and subscription were created"
			}
			if !equalStrings(ns, s.sub.namespaces) {
				gap.Reason += "; the server's namespace table changed"
			}
			if restored {
				// Best effort: the old one may linger on the server.
				_ = c.Send(s.callCtx(ctx), &ua.DeleteSubscriptionsRequest{SubscriptionIDs: []uint32{s.sub.id}}, func(ua.Response) error { return nil })
			}
		}
		// Read every value now, before the monitored items exist (their
		// first notifications are sampled later, so never older): the
		// rules see the state after the gap, such as a counter's increase
		// while the subscription was away.
		// What was read is committed before anything else can fail: the
		// rules' state has moved on with it.
		msgs, states, rerr := s.readAll(ctx, c)
		readAt := s.now().UTC()
		if gap != nil {
			gap.End = readAt
			msgs = append([]pipeline.Message{s.recordGap(*gap)}, msgs...)
			if s.sub != nil {
				// A later attempt records the time after this one.
				s.sub.lastAt = gap.End
			}
		}
		if err := s.emit(ctx, em, states, msgs); err != nil {
			return false, err
		}
		s.readAt = readAt
		if rerr != nil {
			return false, rerr
		}
		if err := s.createSubscription(ctx, c, ns); err != nil {
			return false, err
		}
	}
	s.lostAt = time.Time{}
	return s.publishLoop(ctx, c, em)
}

func (s *Source) callCtx(ctx context.Context) context.Context {
	// The context ends at its deadline; nothing else holds it.
	c, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	time.AfterFunc(s.cfg.RequestTimeout, cancel)
	return c
}

// watchdog is how long a Publish may wait for data or a keep-alive.
func (s *Source) watchdog() time.Duration {
	iv, ka := s.cfg.PublishingInterval, uint32(s.cfg.KeepAliveCount)
	if s.sub != nil {
		iv, ka = s.sub.interval, s.sub.keepAlive
	}
	return iv*time.Duration(ka+1) + 2*time.Second
}

// connect opens a secure channel to the endpoint that matches the
// security settings and activates the kept session on it, or a new one.
func (s *Source) connect(ctx context.Context) (*opcua.Client, bool, error) {
	eps, err := opcua.GetEndpoints(s.callCtx(ctx), s.cfg.Endpoint, opcua.DialTimeout(s.cfg.RequestTimeout))
	if err != nil {
		return nil, false, fmt.Errorf("get endpoints of %s: %w", s.cfg.Endpoint, err)
	}
	ep, err := SelectEndpoint(eps, s.cfg.Security.Policy, s.cfg.Security.Mode, authType(s.cfg.Auth.Type))
	s.mu.Lock()
	s.st.offered = Offered(eps)
	s.mu.Unlock()
	if err != nil {
		return nil, false, err
	}
	der, key, _, err := s.pki.OwnCertificate(s.appURI)
	if err != nil {
		return nil, false, err
	}
	if ep.SecurityPolicyURI != ua.SecurityPolicyURINone {
		cert, err := s.pki.CheckServer(ep.ServerCertificate, s.cfg.ServerFingerprint, s.now())
		s.mu.Lock()
		s.st.serverCert, s.st.serverFP = cert, Fingerprint(ep.ServerCertificate)
		s.mu.Unlock()
		if cert != nil {
			s.m.serverExp.Set(float64(cert.NotAfter.Unix()))
		}
		if err != nil {
			return nil, false, err
		}
	}
	opts, err := s.clientOptions(ep, der, key)
	if err != nil {
		return nil, false, err
	}
	c, err := opcua.NewClient(s.cfg.Endpoint, opts...)
	if err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	s.st.policy = strings.TrimPrefix(ep.SecurityPolicyURI, ua.SecurityPolicyURIPrefix)
	s.st.mode = modeName(ep.SecurityMode)
	s.mu.Unlock()
	if s.session != nil {
		if err := c.Dial(s.callCtx(ctx)); err != nil {
			return nil, false, fmt.Errorf("open a secure channel to %s: %w", s.cfg.Endpoint, err)
		}
		sess := s.session
		s.session = nil
		if err := c.ActivateSession(s.callCtx(ctx), sess); err == nil && c.Session() != nil {
			return c, true, nil
		} else if err != nil {
			s.log.Info().Err(err).Msg("opcua: the previous session could not be reactivated; creating a new one")
		}
		_ = c.Close(ctx)
		if c, err = opcua.NewClient(s.cfg.Endpoint, opts...); err != nil {
			return nil, false, err
		}
	}
	if err := c.Connect(s.callCtx(ctx)); err != nil {
		return nil, false, fmt.Errorf("connect to %s (%s/%s): %w", s.cfg.Endpoint, s.st.policy, s.st.mode, err)
	}
	return c, false, nil
}

func (s *Source) clientOptions(ep *ua.EndpointDescription, der []byte, key *rsa.PrivateKey) ([]opcua.Option, error) {
	reqTimeout := s.cfg.RequestTimeout
	if w := s.watchdog() + 5*time.Second; w > reqTimeout {
		// Publish requests wait up to a keep-alive period; the timeout is
		// also the hint the server drops a request by.
		reqTimeout = w
	}
	opts := []opcua.Option{
		opcua.ApplicationName("plantgate"), opcua.ProductURI("urn:plantgate"),
		opcua.Certificate(der), opcua.PrivateKey(key), opcua.ApplicationURI(s.appURI),
		opcua.SessionName("plantgate " + s.name), opcua.SessionTimeout(s.cfg.SessionTimeout),
		opcua.RequestTimeout(reqTimeout), opcua.DialTimeout(s.cfg.RequestTimeout), opcua.AutoReconnect(false),
	}
	switch s.cfg.Auth.Type {
	case "username":
		opts = append(opts, opcua.AuthUsername(s.cfg.Auth.Username, s.cfg.Auth.Password.Reveal()))
	case "certificate":
		ucert, ukey, err := loadUserCert(s.cfg.Auth.CertFile, s.cfg.Auth.KeyFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, opcua.AuthCertificate(ucert), opcua.AuthPrivateKey(ukey))
	default:
		opts = append(opts, opcua.AuthAnonymous())
	}
	opts = append(opts, opcua.SecurityFromEndpoint(ep, authType(s.cfg.Auth.Type)))
	return opts, nil
}

func loadUserCert(certFile, keyFile string) ([]byte, *rsa.PrivateKey, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("auth.cert_file: %w", err)
	}
	if blk, _ := pemDecode(cb); blk != nil {
		cb = blk
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("auth.key_file: %w", err)
	}
	blk, _ := pemDecode(kb)
	if blk == nil {
		return nil, nil, fmt.Errorf("auth.key_file %s: not PEM", keyFile)
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk); err == nil {
		return cb, k, nil
	}
	k8, err := x509.ParsePKCS8PrivateKey(blk)
	if err != nil {
		return nil, nil, fmt.Errorf("auth.key_file %s: %w", keyFile, err)
	}
	rk, ok := k8.(*rsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("auth.key_file %s: an RSA key is needed, got %T", keyFile, k8)
	}
	return cb, rk, nil
}

func authType(t string) ua.UserTokenType {
	switch t {
	case "username":
		return ua.UserTokenTypeUserName
	case "certificate":
		return ua.UserTokenTypeCertificate
	}
	return ua.UserTokenTypeAnonymous
}

func modeName(m ua.MessageSecurityMode) string {
	switch m {
	case ua.MessageSecurityModeNone:
		return "None"
	case ua.MessageSecurityModeSign:
		return "Sign"
	case ua.MessageSecurityModeSignAndEncrypt:
		return "SignAndEncrypt"
	}
	return m.String()
}

// supportedPolicies are the policies plantgate accepts, weakest first.
var supportedPolicies = []string{"None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"}

// Offered lists a server's endpoints as policy/mode pairs.
func Offered(eps []*ua.EndpointDescription) string {
	var out []string
	seen := map[string]bool{}
	for _, ep := range eps {
		p := strings.TrimPrefix(ep.SecurityPolicyURI, ua.SecurityPolicyURIPrefix) + "/" + modeName(ep.SecurityMode)
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// SelectEndpoint picks the endpoint for policy and mode (policy auto: the
// most secure supported one) that accepts the user token type. When none
// fits, the error names what the server offers.
func SelectEndpoint(eps []*ua.EndpointDescription, policy, mode string, tok ua.UserTokenType) (*ua.EndpointDescription, error) {
	var best *ua.EndpointDescription
	rank := func(ep *ua.EndpointDescription) int {
		for i, p := range supportedPolicies {
			if ep.SecurityPolicyURI == ua.SecurityPolicyURIPrefix+p {
				return i*10 + int(ep.SecurityMode)
			}
		}
		return -1
	}
	for _, ep := range eps {
		r := rank(ep)
		if r < 0 || !acceptsToken(ep, tok) {
			continue
		}
		if policy == "auto" {
			if ep.SecurityMode == ua.MessageSecurityModeNone {
				continue
			}
			if best == nil || r > rank(best) || (r == rank(best) && ep.SecurityLevel > best.SecurityLevel) {
				best = ep
			}
			continue
		}
		if ep.SecurityPolicyURI == ua.SecurityPolicyURIPrefix+policy && modeName(ep.SecurityMode) == mode {
			if best == nil || ep.SecurityLevel > best.SecurityLevel {
				best = ep
			}
		}
	}
	if best != nil {
		return best, nil
	}
	if len(eps) == 0 {
		return nil, errors.New("the server lists no endpoints for this URL (a server behind NAT or a proxy may list only its own address)")
	}
	want := policy + "/" + mode
	if policy == "auto" {
		want = "a secured endpoint (" + strings.Join(supportedPolicies[1:], ", ") + ")"
	}
	return nil, fmt.Errorf("the server offers no acceptable endpoint for %s with %s login; it offers: %s", want, tokenName(tok), Offered(eps))
}

func acceptsToken(ep *ua.EndpointDescription, tok ua.UserTokenType) bool {
	if len(ep.UserIdentityTokens) == 0 {
		return tok == ua.UserTokenTypeAnonymous
	}
	for _, t := range ep.UserIdentityTokens {
		if t.TokenType == tok {
			return true
		}
	}
	return false
}

func tokenName(t ua.UserTokenType) string {
	switch t {
	case ua.UserTokenTypeUserName:
		return "username"
	case ua.UserTokenTypeCertificate:
		return "certificate"
	}
	return "anonymous"
}

// resolve maps every node to the server's namespace table.
func (s *Source) resolve(ns []string) {
	for _, it := range s.items {
		id, err := it.ref.Resolve(ns)
		it.id, it.monID = id, 0
		s.mu.Lock()
		it.monitored = false
		if err != nil {
			it.resolved = ""
			s.nodeErrLocked(it, err.Error())
		} else {
			it.resolved = id.String()
		}
		s.mu.Unlock()
		if err != nil {
			s.log.Warn().Str("node", it.name).Err(err).Msg("opcua: node id does not resolve; retrying after the next connect")
		}
	}
}

func (s *Source) nodeErrLocked(it *item, msg string) {
	it.lastErr = msg
	it.lastErrAt = s.now().UTC()
}

func (s *Source) createSubscription(ctx context.Context, c *opcua.Client, ns []string) error {
	req := &ua.CreateSubscriptionRequest{
		RequestedPublishingInterval: float64(s.cfg.PublishingInterval) / float64(time.Millisecond),
		RequestedLifetimeCount:      uint32(s.cfg.LifetimeCount),
		RequestedMaxKeepAliveCount:  uint32(s.cfg.KeepAliveCount),
		PublishingEnabled:           true,
	}
	var res *ua.CreateSubscriptionResponse
	err := c.Send(s.callCtx(ctx), req, func(v ua.Response) error {
		r, ok := v.(*ua.CreateSubscriptionResponse)
		if !ok {
			return fmt.Errorf("unexpected %T", v)
		}
		res = r
		return nil
	})
	if err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	if res.ResponseHeader != nil && res.ResponseHeader.ServiceResult != ua.StatusOK {
		return fmt.Errorf("create subscription: %w", res.ResponseHeader.ServiceResult)
	}
	iv := time.Duration(res.RevisedPublishingInterval * float64(time.Millisecond))
	if iv <= 0 {
		iv = s.cfg.PublishingInterval
	}
	ka := res.RevisedMaxKeepAliveCount
	if ka == 0 {
		ka = uint32(s.cfg.KeepAliveCount)
	}
	s.takeAcks() // those of an earlier subscription are of no use
	s.sub = &subscription{id: res.SubscriptionID, nextSeq: 1, interval: iv, keepAlive: ka, namespaces: ns, lastAt: s.now().UTC()}
	s.mu.Lock()
	s.st.subsCreated++
	s.st.subID, s.st.nextSeq, s.st.messages = s.sub.id, 1, 0
	s.mu.Unlock()
	return s.monitor(ctx, c, s.items)
}

// maxPerCall bounds the items of one CreateMonitoredItems or Read call;
// servers refuse more than their operation limits (often 1000 to 10000).
const maxPerCall = 1000

// monitor creates monitored items for the resolved items; one that the
// server refuses (BadNodeIdUnknown) is reported and retried later without
// holding back the others.
func (s *Source) monitor(ctx context.Context, c *opcua.Client, items []*item) error {
	var todo []*item
	for _, it := range items {
		if it.id != nil && it.monID == 0 {
			todo = append(todo, it)
		}
	}
	for len(todo) > 0 {
		n := min(len(todo), maxPerCall)
		chunk := todo[:n]
		todo = todo[n:]
		reqs := make([]*ua.MonitoredItemCreateRequest, len(chunk))
		for i, it := range chunk {
			reqs[i] = s.itemRequest(it)
		}
		var res *ua.CreateMonitoredItemsResponse
		err := c.Send(s.callCtx(ctx), &ua.CreateMonitoredItemsRequest{SubscriptionID: s.sub.id, TimestampsToReturn: ua.TimestampsToReturnBoth, ItemsToCreate: reqs}, func(v ua.Response) error {
			r, ok := v.(*ua.CreateMonitoredItemsResponse)
			if !ok {
				return fmt.Errorf("unexpected %T", v)
			}
			res = r
			return nil
		})
		if err == nil && res.ResponseHeader != nil && res.ResponseHeader.ServiceResult != ua.StatusOK {
			err = res.ResponseHeader.ServiceResult
		}
		if err != nil {
			return fmt.Errorf("create monitored items: %w", err)
		}
		for i, it := range chunk {
			if i >= len(res.Results) {
				break
			}
			r := res.Results[i]
			s.mu.Lock()
			if r.StatusCode == ua.StatusOK {
				it.monID = r.MonitoredItemID
				it.monitored = true
			} else {
				it.retryAt = s.now().Add(s.cfg.RetryNodes)
				s.nodeErrLocked(it, fmt.Sprintf("the server refused to monitor %s: %v", it.ref, r.StatusCode))
			}
			s.mu.Unlock()
			if r.StatusCode != ua.StatusOK {
				s.log.Warn().Str("node", it.name).Str("node_id", it.ref.String()).Str("status", r.StatusCode.Error()).Msg("opcua: node not monitored; retrying")
			}
		}
	}
	return nil
}

func (s *Source) itemRequest(it *item) *ua.MonitoredItemCreateRequest {
	discardOldest := true
	if it.cfg.DiscardOldest != nil {
		discardOldest = *it.cfg.DiscardOldest
	}
	p := &ua.MonitoringParameters{
		ClientHandle:     it.handle,
		SamplingInterval: float64(it.cfg.Sampling) / float64(time.Millisecond),
		QueueSize:        uint32(it.cfg.QueueSize),
		DiscardOldest:    discardOldest,
	}
	if d := it.cfg.Deadband; d != nil {
		typ := uint32(ua.DeadbandTypeAbsolute)
		if d.Type == "percent" {
			typ = uint32(ua.DeadbandTypePercent)
		}
		p.Filter = ua.NewExtensionObject(&ua.DataChangeFilter{Trigger: ua.DataChangeTriggerStatusValue, DeadbandType: typ, DeadbandValue: d.Value})
	}
	return &ua.MonitoredItemCreateRequest{
		ItemToMonitor:       &ua.ReadValueID{NodeID: it.id, AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}},
		MonitoringMode:      ua.MonitoringModeReporting,
		RequestedParameters: p,
	}
}

// readAll reads every resolved item's current value and feeds the rules.
// The caller commits the messages and state it returns, also with an
// error.
func (s *Source) readAll(ctx context.Context, c *opcua.Client) (msgs []pipeline.Message, states []pipeline.StateWrite, err error) {
	var todo []*item
	for _, it := range s.items {
		if it.id != nil {
			todo = append(todo, it)
		}
	}
	// Every value is read before any is fed to the rules, and the values no
	// rule watches go first: an event raised by this read (the parts made
	// while the gateway was away) then carries the other nodes' values
	// (the order number) as they are now, not as missing.
	type read struct {
		it *item
		dv *ua.DataValue
	}
	var got []read
	defer func() {
		watched := map[string]bool{}
		for _, r := range s.rules {
			watched[r.Value] = true
		}
		sort.SliceStable(got, func(i, j int) bool { return !watched[got[i].it.name] && watched[got[j].it.name] })
		for _, g := range got {
			m, st := s.sample(g.it, g.dv, true)
			msgs = append(msgs, m...)
			states = append(states, st...)
		}
	}()
	for len(todo) > 0 {
		n := min(len(todo), maxPerCall)
		chunk := todo[:n]
		todo = todo[n:]
		ids := make([]*ua.ReadValueID, len(chunk))
		for i, it := range chunk {
			ids[i] = &ua.ReadValueID{NodeID: it.id, AttributeID: ua.AttributeIDValue}
		}
		res, rerr := c.Read(s.callCtx(ctx), &ua.ReadRequest{NodesToRead: ids, TimestampsToReturn: ua.TimestampsToReturnBoth})
		if rerr != nil {
			// What was read so far goes back too (the deferred feed):
			// its samples go into the rules' state.
			return nil, nil, fmt.Errorf("read current values: %w", rerr)
		}
		for i, it := range chunk {
			if i >= len(res.Results) {
				break
			}
			got = append(got, read{it, res.Results[i]})
		}
	}
	return msgs, states, nil
}

// sample turns one data value into messages and rule state. read marks a
// value from a Read (not a notification): an unknown node is an error then.
func (s *Source) sample(it *item, dv *ua.DataValue, read bool) ([]pipeline.Message, []pipeline.StateWrite) {
	if dv == nil {
		return nil, nil
	}
	code := ua.StatusOK
	if dv.EncodingMask&ua.DataValueStatusCode != 0 {
		code = dv.Status
	}
	good := uint32(code)&0xC0000000 == 0
	at := dv.SourceTimestamp
	if at.IsZero() {
		at = dv.ServerTimestamp
	}
	if at.IsZero() {
		at = s.now()
	}
	at = at.UTC()
	var v any
	if dv.Value != nil {
		v = dv.Value.Value()
	}
	if good && !it.lastSrc.IsZero() && (at.Before(it.lastSrc) || at.Equal(it.lastSrc) && rules.Equal(plainValue(v), it.lastSrcValue)) {
		s.log.Debug().Str("node", it.name).Time("at", at).Time("newest", it.lastSrc).Interface("value", v).Msg("opcua: older or repeated sample ignored")
		// An older sample than one already seen (a Read racing a
		// notification), or the same sample again: nothing new.
		return nil, nil
	}
	if good {
		it.lastSrc, it.lastSrcValue = at, plainValue(v)
	}
	s.mu.Lock()
	it.lastAt = s.now().UTC()
	it.quality = qualityName(code)
	if good {
		it.lastValue = plainValue(v)
		it.changes++
	} else {
		s.nodeErrLocked(it, "bad quality: "+code.Error())
		if read && code == ua.StatusBadNodeIDUnknown {
			it.monitored = false
		}
	}
	s.st.values++
	s.mu.Unlock()
	s.m.values.Inc()
	sm := rules.Sample{Name: it.name, Value: plainValue(v), Good: good, Time: at}
	evs, ws, errs := s.engine.Observe(sm)
	for _, err := range errs {
		var re *rules.RuleError
		if errors.As(err, &re) {
			s.mu.Lock()
			s.st.ruleErr[re.Rule] = s.now().UTC().Format(time.RFC3339) + ": " + re.Err.Error()
			s.mu.Unlock()
		}
		s.log.Warn().Err(err).Str("node", it.name).Msg("opcua: rule")
	}
	var msgs []pipeline.Message
	if s.cfg.EmitValues {
		msgs = append(msgs, s.valueMessage(it, sm, code))
	}
	for _, ev := range evs {
		msgs = append(msgs, s.eventMessage(ev))
	}
	states := make([]pipeline.StateWrite, len(ws))
	for i, w := range ws {
		states[i] = pipeline.StateWrite{Name: w.Name, Value: w.Value}
	}
	return msgs, states
}

func qualityName(c ua.StatusCode) string {
	switch {
	case c == ua.StatusOK:
		return "good"
	case uint32(c)&0xC0000000 == 0x40000000:
		return "uncertain (" + c.Error() + ")"
	case uint32(c)&0x80000000 != 0:
		return "bad (" + c.Error() + ")"
	}
	return "good (" + c.Error() + ")"
}

// plainValue makes a decoded OPC UA value JSON-friendly.
func plainValue(v any) any {
	switch x := v.(type) {
	case *ua.LocalizedText:
		if x == nil {
			return nil
		}
		return x.Text
	case *ua.NodeID:
		return x.String()
	case *ua.QualifiedName:
		return x.Name
	case time.Time:
		return x.UTC()
	case []byte:
		return x
	}
	return v
}

func (s *Source) valueMessage(it *item, sm rules.Sample, code ua.StatusCode) pipeline.Message {
	q := qualityName(code)
	ts := sm.Time.Format(time.RFC3339Nano)
	p := map[string]any{"name": it.name, "node": it.ref.String(), "value": sm.Value, "quality": q, "good": sm.Good, "time": ts}
	meta := map[string]any{"kind": KindValue, "name": it.name}
	// The raw JSON is written by hand: it is the hot path of a source
	// with thousands of items, and json.Marshal of the map sorts its keys.
	v, err := json.Marshal(sm.Value)
	if err != nil {
		return s.message(p, meta)
	}
	b := make([]byte, 0, 128+len(v))
	b = append(b, `{"name":`...)
	b = strconv.AppendQuote(b, it.name)
	b = append(b, `,"node":`...)
	b = strconv.AppendQuote(b, it.ref.String())
	b = append(b, `,"value":`...)
	b = append(b, v...)
	b = append(b, `,"quality":`...)
	b = strconv.AppendQuote(b, q)
	b = append(b, `,"good":`...)
	b = strconv.AppendBool(b, sm.Good)
	b = append(b, `,"time":"`...)
	b = append(b, ts...)
	b = append(b, `"}`...)
	return pipeline.Message{Raw: b, Payload: p, Meta: meta, Time: s.now().UTC()}
}

func (s *Source) eventMessage(ev rules.Event) pipeline.Message {
	p := ev.Payload()
	p["source"] = s.name
	s.mu.Lock()
	s.st.events++
	s.st.ruleEvents[ev.Rule]++
	s.mu.Unlock()
	s.m.events.Inc()
	return s.message(p, map[string]any{"kind": KindEvent, "rule": ev.Rule, "rule_kind": ev.Kind, "endpoint": s.cfg.Endpoint})
}

func (s *Source) recordGap(g Gap) pipeline.Message {
	if len(g.Items) == 0 {
		for _, it := range s.items {
			g.Items = append(g.Items, it.name)
		}
	}
	if g.Start.IsZero() {
		g.Start = g.End
	}
	s.mu.Lock()
	s.m.gaps.Inc()
	s.st.gapCount++
	s.st.gaps = append(s.st.gaps, g)
	if len(s.st.gaps) > 20 {
		s.st.gaps = s.st.gaps[len(s.st.gaps)-20:]
	}
	s.mu.Unlock()
	s.log.Warn().Time("start", g.Start).Time("end", g.End).Str("reason", g.Reason).Str("sequences", g.Sequences).Int("items", len(g.Items)).Msg("opcua: gap in the values")
	p := map[string]any{"source": s.name, "start": g.Start.Format(time.RFC3339Nano), "end": g.End.Format(time.RFC3339Nano), "items": g.Items, "reason": g.Reason}
	if g.Sequences != "" {
		p["sequences"] = g.Sequences
	}
	return s.message(p, map[string]any{"kind": KindGap, "endpoint": s.cfg.Endpoint})
}

func (s *Source) message(p map[string]any, meta map[string]any) pipeline.Message {
	raw, err := json.Marshal(p)
	m := pipeline.Message{Raw: raw, Payload: p, Meta: meta, Time: s.now().UTC()}
	if err != nil {
		m.DecodeErr = err
		m.Raw = []byte(fmt.Sprint(p))
	}
	return m
}

// Redecode implements pipeline.Redecoder: the raw bytes are the payload's
// JSON.
func (s *Source) Redecode(raw []byte, _ map[string]any) (any, error) {
	var v map[string]any
	err := json.Unmarshal(raw, &v)
	return v, err
}

// emit commits msgs with the rule states, retrying until it succeeds or
// ctx ends: the rules' in-memory state has moved on, so the events must
// not be dropped.
func (s *Source) emit(ctx context.Context, em pipeline.Emitter, states []pipeline.StateWrite, msgs []pipeline.Message) error {
	if len(msgs) == 0 && len(states) == 0 {
		return nil
	}
	pol := backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second}
	for n := 0; ; n++ {
		var err error
		if se, ok := em.(pipeline.StateEmitter); ok && len(states) > 0 {
			err = se.EmitWithState(ctx, states, msgs...)
		} else if len(msgs) > 0 {
			err = em.Emit(ctx, msgs...)
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if n == 0 {
			s.log.Warn().Err(err).Msg("opcua: the queue refused values; retrying (notifications stay unacknowledged)")
		}
		if backoff.Wait(ctx, pol.Delay(n)) != nil {
			return ctx.Err()
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

var (
	_ pipeline.Source         = (*Source)(nil)
	_ pipeline.StatusReporter = (*Source)(nil)
	_ pipeline.Redecoder      = (*Source)(nil)
)
