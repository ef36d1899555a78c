package d365

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/certexpiry"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// maxResponseBytes bounds an answer read into memory.
const maxResponseBytes = 64 << 20

// ResolveKind is the kind under which pipeline.Env.Resolve hands out F&O
// environments: env.Resolve(d365.ResolveKind, "prod").
const ResolveKind = "fo"

// Options are what an environment gets from the gateway besides its config.
type Options struct {
	// Log receives lifecycle events (circuit opened or closed).
	Log zerolog.Logger
	// Metrics are the shared plantgate_fo_* collectors (nil: a private,
	// unregistered set).
	Metrics *Metrics
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Breaker overrides the circuit breaker's defaults (5 consecutive
	// failures open it; the first probe after 5 s, doubling up to 1 min).
	// Failures, Delay and MaxDelay are used when set.
	Breaker BreakerConfig
	// Limiter overrides the limiter's tuning (Floor, Initial, Increase,
	// Decrease) when set; Ceiling and MaxConcurrent come from the config.
	Limiter LimiterConfig
}

// Env is one F&O environment as all its sinks share it: the HTTP client
// (trusting ca_file besides the system roots), the token source, the
// adaptive limiter and the circuit breaker. It is safe for concurrent use.
type Env struct {
	name    string
	url     string
	company string
	timeout time.Duration
	hc      *http.Client
	tokens  *TokenSource
	limiter *Limiter
	breaker *Breaker
	m       *Metrics
	log     zerolog.Logger
	now     func() time.Time

	importOnce sync.Once
	importLock *ImportLock

	mu          sync.Mutex
	tokenErr    string
	lastOK      time.Time
	unavailable time.Time // F&O answered 503 with Retry-After until then
	unavailMsg  string
}

// NewEnv builds environment name from its config. It reads ca_file and
// the certificate files but does no network I/O.
func NewEnv(name string, c *config.FOEnv, o Options) (*Env, error) {
	if c == nil {
		return nil, fmt.Errorf("fo environment %s: no config", name)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	u := strings.TrimRight(strings.TrimSpace(c.URL), "/")
	if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
		return nil, fmt.Errorf("fo environment %s: url %q is not an absolute http(s) URL", name, c.URL)
	}
	// F&O checks that the token audience is the environment URL in lower case.
	u = strings.ToLower(u)
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("fo environment %s: read ca_file: %w", name, err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("fo environment %s: ca_file %s holds no PEM certificate", name, c.CAFile)
		}
		_ = o.Metrics.Certificates.SetPEM("fo", name, certexpiry.UseCA, pem)
		tlsCfg.RootCAs = pool
	}
	maxConc := max(c.MaxConcurrent, 1)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	tr.MaxIdleConnsPerHost = maxConc + 4
	tr.MaxConnsPerHost = 0
	tr.ResponseHeaderTimeout = 0
	hc := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ts, err := NewTokenSource(c.AuthorityURL, c.TenantID, u, Credentials{
		ClientID: c.ClientID, ClientSecret: c.ClientSecret, CertificateFile: c.CertificateFile, PrivateKeyFile: c.PrivateKeyFile,
	}, &http.Client{Transport: tr, Timeout: timeoutOr(c.Timeout.D())})
	if err != nil {
		return nil, fmt.Errorf("fo environment %s: %w", name, err)
	}
	if c.CertificateFile != "" {
		// NewTokenSource read and checked it.
		_ = o.Metrics.Certificates.SetFile("fo", name, certexpiry.UseClient, c.CertificateFile)
	}
	e := &Env{
		name: name, url: u, company: c.Company, timeout: timeoutOr(c.Timeout.D()),
		hc: hc, tokens: ts, m: o.Metrics, log: o.Log, now: o.Now,
	}
	ts.now = o.Now
	ts.onRefresh = e.onTokenRefresh
	lc := o.Limiter
	lc.Ceiling, lc.MaxConcurrent, lc.Now = c.MaxRequestsPerSecond, maxConc, o.Now
	lc.OnRate = func(r float64) { e.m.LimiterRate.WithLabelValues(name).Set(r) }
	e.limiter = NewLimiter(lc)
	e.m.LimiterRate.WithLabelValues(name).Set(e.limiter.Rate())
	bc := o.Breaker
	bc.Now, bc.OnState = o.Now, e.onBreakerState
	e.breaker = NewBreaker(bc)
	e.m.BreakerState.WithLabelValues(name).Set(0)
	e.m.initEnv(name)
	return e, nil
}

func timeoutOr(d time.Duration) time.Duration {
	if d <= 0 {
		return 30 * time.Second
	}
	return d
}

// Name returns the environment's name in the config.
func (e *Env) Name() string { return e.name }

// URL returns the environment URL (lower case, no trailing slash).
func (e *Env) URL() string { return e.url }

// ServiceRoot returns the OData service root, <URL>/data.
func (e *Env) ServiceRoot() string { return e.url + "/data" }

// Company returns the environment's default company (dataAreaId).
func (e *Env) Company() string { return e.company }

// Limiter returns the environment's shared limiter.
func (e *Env) Limiter() *Limiter { return e.limiter }

// Breaker returns the environment's circuit breaker.
func (e *Env) Breaker() *Breaker { return e.breaker }

// Tokens returns the environment's token source.
func (e *Env) Tokens() *TokenSource { return e.tokens }

func (e *Env) onTokenRefresh(reason string, err error) {
	result := "ok"
	e.mu.Lock()
	if err != nil {
		result = "error"
		e.tokenErr = err.Error()
	} else {
		e.tokenErr = ""
	}
	e.mu.Unlock()
	e.m.TokenRefreshes.WithLabelValues(e.name, reason, result).Inc()
	if err == nil {
		e.log.Debug().Str(logging.FieldReason, reason).Msg("access token obtained")
	}
}

func (e *Env) onBreakerState(s BreakerState) {
	e.m.BreakerState.WithLabelValues(e.name).Set(float64(s))
	switch s {
	case BreakerOpen:
		st := e.breaker.statusUnlocked()
		e.log.Warn().Str(logging.FieldReason, st).Msg("circuit opened: F&O unreachable, calls paused")
	case BreakerClosed:
		e.log.Info().Msg("circuit closed: F&O reachable again")
	}
}

// Request is one call to F&O.
type Request struct {
	// Method and Path (below the environment URL, escaped, with any query),
	// e.g. "POST", "/data/ProductionOrderHeaders".
	Method string
	Path   string
	// Body is sent with ContentType (default application/json).
	Body        []byte
	ContentType string
	// Header holds extra headers.
	Header http.Header
	// Op labels the call in metrics: odata, batch, mes, verify, probe.
	Op string
	// Priority orders the call in the limiter.
	Priority Priority
	// BeforeSend, if set, runs after the limiter and the breaker admitted
	// the call, just before the request leaves (again before the one resend
	// after a 401). Sinks record a record as in flight there. An error
	// aborts the call.
	BeforeSend func() error
}

// Response is F&O's answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends r and classifies the outcome (see Classify): it returns the
// answer and nil for a 2xx, and otherwise an error wrapping *Error in the
// pipeline kind a sink returns (pipeline.Permanent, pipeline.Throttle, or
// transient), with the answer when there was one. Do waits for the
// environment's limiter; while the circuit breaker is open it fails fast
// with pipeline.Throttle until the next probe. A 401 drops the token and
// retries once with a new one. A request that was sent without an answer,
// or that a gateway answered 502 Bad Gateway or 504 Gateway Timeout,
// returns an error for which IsInDoubt is true. A request that provably
// never reached F&O (connection refused, TLS or DNS failure, a kept-alive
// connection the server had closed before the request was written) is a
// transient failure that is not in doubt.
func (e *Env) Do(ctx context.Context, r *Request) (*Response, error) {
	op := r.Method + " " + pathOnly(r.Path)
	ok, probe, wait := e.breaker.Allow()
	// Half-open with the probe slot taken: wait for the probe's outcome
	// (bounded by the probe's own timeout) rather than fail for a fixed
	// delay, so that when F&O is back all streams reach the limiter at
	// once and it admits urgent requests first (see Breaker.ProbeDone).
	// If the probe failed, the circuit is open again and the call fails
	// fast below.
	if !ok {
		giveUp := time.NewTimer(2 * e.timeout)
	probeWait:
		for ch := e.breaker.ProbeDone(); !ok && ch != nil; ch = e.breaker.ProbeDone() {
			select {
			case <-ch:
			case <-giveUp.C:
				break probeWait
			case <-ctx.Done():
				break probeWait
			}
			ok, probe, wait = e.breaker.Allow()
		}
		giveUp.Stop()
	}
	if !ok {
		st := e.breaker.Status()
		msg := fmt.Sprintf("F&O environment %s is unreachable; calls are paused (circuit %s after %d consecutive failures, next probe in %s)",
			e.name, st.State, e.breaker.cfg.Failures, wait.Round(time.Millisecond))
		if st.LastError != "" {
			msg += "; last failure: " + st.LastError
		}
		return nil, pipeline.Throttle(wait, &Error{Op: op, Message: msg, Err: ErrCircuitOpen})
	}
	resp, conn, err := e.do(ctx, r, op)
	switch conn {
	case connOK:
		e.breaker.Success(probe)
	case connFailed:
		e.breaker.Failure(probe, failureReason(err))
	default:
		e.breaker.Release(probe)
	}
	return resp, err
}

type connResult int

const (
	connUnknown connResult = iota
	connOK
	connFailed
)

func failureReason(err error) string {
	if err == nil {
		return ""
	}
	return clip(err.Error())
}

func (e *Env) do(ctx context.Context, r *Request, op string) (*Response, connResult, error) {
	for attempt := 0; ; attempt++ {
		permit, err := e.limiter.Acquire(ctx, r.Priority)
		if err != nil {
			return nil, connUnknown, &Error{Op: op, Message: "gave up waiting for the request limiter", Err: err}
		}
		tok, err := e.tokens.Token(ctx)
		if err != nil {
			permit.Done(OutcomeOther, 0)
			if ctx.Err() != nil {
				return nil, connUnknown, err
			}
			if tokenConnectivity(err) {
				return nil, connFailed, err
			}
			return nil, connUnknown, err
		}
		if r.BeforeSend != nil {
			if err := r.BeforeSend(); err != nil {
				permit.Done(OutcomeOther, 0)
				return nil, connUnknown, &Error{Op: op, Message: "record the request as in flight: " + err.Error(), Err: err}
			}
		}
		start := e.now()
		resp, sent, err := e.send(ctx, r, tok)
		e.m.RequestSeconds.WithLabelValues(e.name, r.Op).Observe(e.now().Sub(start).Seconds())
		if err != nil {
			permit.Done(OutcomeOther, 0)
			e.m.Requests.WithLabelValues(e.name, r.Op, "0").Inc()
			ne := &Error{Op: op, Message: "no answer from F&O: " + clip(e.netReason(err)), InDoubt: sent, Err: err}
			if ctx.Err() != nil && !sent {
				return nil, connUnknown, ne
			}
			return nil, connFailed, ne
		}
		e.m.Requests.WithLabelValues(e.name, r.Op, strconv.Itoa(resp.Status)).Inc()
		ra, hasRA := RetryAfter(resp.Header, e.now())
		switch {
		case resp.Status == http.StatusTooManyRequests:
			e.m.Throttled.WithLabelValues(e.name).Inc()
			if !hasRA {
				ra = DefaultRetryAfter
			}
			permit.Done(OutcomeThrottled, ra)
		case resp.Status == http.StatusServiceUnavailable && hasRA:
			permit.Done(OutcomePause, ra)
			e.mu.Lock()
			e.unavailable = e.now().Add(ra)
			e.unavailMsg = ErrorText(resp.Header.Get("Content-Type"), resp.Body)
			e.mu.Unlock()
		case resp.Status >= 500:
			permit.Done(OutcomeOther, 0)
		default:
			permit.Done(OutcomeOK, 0)
		}
		if resp.Status == http.StatusUnauthorized && attempt == 0 {
			e.tokens.Invalidate(tok)
			e.m.TokenRefreshes.WithLabelValues(e.name, "unauthorized", "requested").Inc()
			continue
		}
		if resp.Status >= 200 && resp.Status < 300 {
			e.mu.Lock()
			e.lastOK = e.now()
			e.mu.Unlock()
		}
		cerr := Classify(op, resp.Status, resp.Header, resp.Body, e.now())
		if resp.Status == http.StatusGatewayTimeout || resp.Status == http.StatusBadGateway {
			// A gateway gave up waiting for F&O (504), or lost its
			// connection to F&O or got a broken answer (502): F&O may
			// still have processed the request.
			var de *Error
			if errors.As(cerr, &de) {
				de.InDoubt = true
			}
		}
		if resp.Status == http.StatusUnauthorized {
			var de *Error
			if errors.As(cerr, &de) {
				de.Message = strings.TrimSpace("F&O rejected a fresh access token; check that client " + e.tokens.clientID +
					" is registered in F&O (System administration > Setup > Microsoft Entra applications) and that url is the environment URL. " + de.Message)
			}
		}
		conn := connOK
		if resp.Status >= 500 {
			conn = connFailed
		}
		return resp, conn, cerr
	}
}

// staleConnRetries bounds the resends of a request that went out on a
// kept-alive connection the server had already closed.
const staleConnRetries = 2

// send makes one HTTP request. sent reports whether the request was
// written completely, so a missing answer leaves its outcome in doubt.
// A request written on a kept-alive connection that the server had
// closed before (its FIN or close alert was already there when the
// connection was taken from the pool) never reached F&O: it is not sent,
// and send tries again on a new connection.
func (e *Env) send(ctx context.Context, r *Request, tok string) (*Response, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		resp, sent, stale, err := e.sendOnce(ctx, r, tok)
		if err == nil || sent || !stale || attempt >= staleConnRetries || ctx.Err() != nil {
			return resp, sent, err
		}
	}
}

func (e *Env) sendOnce(ctx context.Context, r *Request, tok string) (resp *Response, sent, stale bool, err error) {
	var wrote, closedBefore atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			if i.Reused && connClosedByPeer(i.Conn) {
				closedBefore.Store(true)
			}
		},
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				wrote.Store(true)
			}
		},
	})
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, e.url+r.Path, body)
	if err != nil {
		return nil, false, false, fmt.Errorf("build request: %w", err)
	}
	req.Header = requestHeader(r, tok)
	hr, err := e.hc.Do(req)
	if err != nil {
		// The server closed the kept-alive connection before the request
		// was written (net/http's "server closed idle connection" says so
		// too): F&O never saw it.
		stale = closedBefore.Load() || isServerClosedIdle(err)
		return nil, wrote.Load() && !stale, stale, err
	}
	defer func() { _ = hr.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(hr.Body, maxResponseBytes))
	if err != nil {
		return nil, true, false, fmt.Errorf("read answer %d: %w", hr.StatusCode, err)
	}
	return &Response{Status: hr.StatusCode, Header: hr.Header, Body: b}, true, false, nil
}

// isServerClosedIdle reports net/http's errServerClosedIdle: the server's
// end of a kept-alive connection was closed before the request was
// registered on it.
func isServerClosedIdle(err error) bool {
	for err != nil {
		if err.Error() == "http: server closed idle connection" {
			return true
		}
		err = errors.Unwrap(err)
	}
	return false
}

// connClosedByPeer reports whether the server already closed (or started
// to close) a kept-alive HTTP/1.1 connection: its end of file, or
// unsolicited bytes such as a TLS close alert, are waiting to be read.
// It peeks without consuming; false when it cannot tell.
func connClosedByPeer(c net.Conn) bool {
	if tc, ok := c.(*tls.Conn); ok {
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			return false // HTTP/2 sends frames on idle connections
		}
		c = tc.NetConn()
	}
	return peerClosed(c)
}

// netReason describes a failed exchange without repeating the URL.
func (e *Env) netReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer within " + e.timeout.String() + " (timeout)"
	}
	return err.Error()
}

func pathOnly(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

// Probe reports whether the environment is usable: its circuit is not
// open, F&O did not ask to wait (503 with Retry-After), and a token can
// be obtained (which reaches the identity platform
// unless a cached token is still valid). Errors wrap pipeline.ErrNotReady.
func (e *Env) Probe(ctx context.Context) error {
	if st := e.breaker.Status(); st.State == BreakerOpen.String() {
		return fmt.Errorf("%w: F&O environment %s unreachable (circuit open, next probe at %s): %s",
			pipeline.ErrNotReady, e.name, st.NextProbe.Format(time.RFC3339), st.LastError)
	}
	e.mu.Lock()
	until, msg := e.unavailable, e.unavailMsg
	e.mu.Unlock()
	if e.now().Before(until) {
		return fmt.Errorf("%w: F&O environment %s answered 503 Service Unavailable, retry after %s: %s",
			pipeline.ErrNotReady, e.name, until.UTC().Format(time.RFC3339), msg)
	}
	if _, err := e.tokens.Token(ctx); err != nil {
		return fmt.Errorf("%w: F&O environment %s: %w", pipeline.ErrNotReady, e.name, err)
	}
	return nil
}

// Status describes the environment for status output; it never holds a
// secret or a token.
func (e *Env) Status() map[string]any {
	e.mu.Lock()
	tokenErr, lastOK := e.tokenErr, e.lastOK
	e.mu.Unlock()
	st := map[string]any{
		"name": e.name, "url": e.url, "limiter": e.limiter.Status(), "breaker": e.breaker.Status(),
	}
	if e.company != "" {
		st["company"] = e.company
	}
	if tokenErr != "" {
		st["token_error"] = tokenErr
	}
	if !lastOK.IsZero() {
		st["last_success_at"] = lastOK.UTC()
	}
	return st
}

// Resolve returns the environment called name from a plugin's Env
// (through Env.Resolve, which the gateway wires to its F&O environments).
func Resolve(env pipeline.Env, name string) (*Env, error) {
	if env.Resolve == nil {
		return nil, fmt.Errorf("resolve fo environment %s: this gateway offers no F&O environments", name)
	}
	v, err := env.Resolve(ResolveKind, name)
	if err != nil {
		return nil, fmt.Errorf("resolve fo environment %s: %w", name, err)
	}
	e, ok := v.(*Env)
	if !ok || e == nil {
		return nil, fmt.Errorf("resolve fo environment %s: got %T", name, v)
	}
	return e, nil
}

// Metrics returns the shared plantgate_fo_* collectors.
func (e *Env) Metrics() *Metrics { return e.m }

// Now returns the environment's clock reading.
func (e *Env) Now() time.Time { return e.now() }

// CloseIdleConnections closes the environment's idle connections (to F&O
// and the identity platform). The environment stays usable.
func (e *Env) CloseIdleConnections() { e.hc.CloseIdleConnections() }
