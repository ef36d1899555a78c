package foemu

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/plantgate/plantgate/internal/logging"
)

// Faults are failures injected into the emulator, set from the config file
// (faults:) or at run time with POST /_emulator/faults and SetFaults. A new
// set replaces the previous one.
type Faults struct {
	// Rules inject latency, errors and outages per route.
	Rules []FaultRule `yaml:"rules" json:"rules"`
	// Throttling, if set, replaces the configured throttling budget.
	Throttling *ThrottleConfig `yaml:"throttling" json:"throttling,omitempty"`
	// DMF injects failures into DMF executions (hangs, failed or partly
	// failed imports, status values outside the enum).
	DMF DMFFaults `yaml:"dmf" json:"dmf,omitzero"`
}

// DMFFaults are failures of DMF executions, as opposed to failures of the
// HTTP requests (FaultRule route dmf).
type DMFFaults struct {
	// HangExecuting makes executions that reach Executing while it is set
	// stay Executing: forever (until Reset or shutdown; clearing the faults
	// does not release them, as a hung F&O batch job is not released
	// either) or, with HangFor, for that long instead of
	// dmf.execution_time. A hung execution still counts as running for
	// dmf.parallel_imports.
	HangExecuting bool `yaml:"hang_executing" json:"hang_executing,omitempty"`
	// HangFor bounds the hang (0: forever). HangFor alone also hangs.
	HangFor Duration `yaml:"hang_for" json:"hang_for,omitempty"`
	// FailNextImports makes the next N executions accepted by
	// ImportFromPackage end Failed, importing nothing, whatever their
	// package holds. It counts down: GET /_emulator/faults (and Faults())
	// shows what is left.
	FailNextImports int `yaml:"fail_next_imports" json:"fail_next_imports,omitempty"`
	// PartialNextImports makes the next N executions end
	// PartiallySucceeded: the last row of each entity fails at target
	// (listed in the target error keys file), the others are imported. It
	// counts down like FailNextImports, which is used first.
	PartialNextImports int `yaml:"partial_next_imports" json:"partial_next_imports,omitempty"`
	// SummaryStatus, if set, is what GetExecutionSummaryStatus answers for
	// every known execution instead of its status, e.g. "Pending", a value
	// outside DMFExecutionSummaryStatus.
	SummaryStatus string `yaml:"summary_status" json:"summary_status,omitempty"`
}

// FaultRule injects failures into the requests of one route. Routes:
// discovery, token, odata, batch, dmf, mes, blob, or * for all of them.
// The control endpoints (/_emulator) are never affected.
type FaultRule struct {
	// Route selects the requests.
	Route string `yaml:"route" json:"route"`
	// Latency is added before the request is handled; Jitter adds a random
	// extra delay up to its value.
	Latency Duration `yaml:"latency" json:"latency,omitempty"`
	Jitter  Duration `yaml:"jitter" json:"jitter,omitempty"` // random extra latency, up to this value
	// ErrorRate is the fraction (0 to 1) of requests answered with
	// ErrorStatus (default 503) instead of being handled.
	ErrorRate   float64 `yaml:"error_rate" json:"error_rate,omitempty"`
	ErrorStatus int     `yaml:"error_status" json:"error_status,omitempty"` // status of injected errors (default 503)
	// Outage, if set, makes the route unavailable for a time window.
	Outage *Outage `yaml:"outage" json:"outage,omitempty"`
	// AnswerDelay holds the answer this long after the request was
	// handled: a client that gives up sooner sees a timeout for a request
	// that took effect (its answer lost), the case of a send in doubt.
	AnswerDelay Duration `yaml:"answer_delay" json:"answer_delay,omitempty"`
}

// answerDelay is the sum of the answer delays of route's rules.
func (fs *faultSet) answerDelay(route string) time.Duration {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var d time.Duration
	for _, r := range fs.faults.Rules {
		if r.Route == "*" || r.Route == route {
			d += r.AnswerDelay.D()
		}
	}
	return d
}

// Outage modes.
const (
	Outage503    = "503"
	OutageReset  = "reset"
	OutageRefuse = "refuse"
)

// Outage is a window during which a route is unavailable.
type Outage struct {
	// Mode is 503 (answer 503 Service Unavailable with Retry-After), reset
	// (close the connection without an answer) or refuse (close the
	// listener, so new connections are refused; applies to the whole
	// emulator, including /_emulator, and needs route "*").
	Mode string `yaml:"mode" json:"mode"`
	// StartIn delays the outage from the moment the faults are set.
	StartIn Duration `yaml:"start_in" json:"start_in,omitempty"`
	// Duration is the length of the outage; 0 means until the faults are
	// replaced or cleared.
	Duration Duration `yaml:"duration" json:"duration,omitempty"`
}

func (f *Faults) validate(d *yamlDoc, at []string) error {
	for i, r := range f.Rules {
		rp := append(append([]string(nil), at...), "rules", strconv.Itoa(i))
		if !validRoute(r.Route) {
			return d.errorf(rp, "fault route %q is not one of %s or *", r.Route, strings.Join(routes, ", "))
		}
		if r.ErrorRate < 0 || r.ErrorRate > 1 {
			return d.errorf(rp, "error_rate must be between 0 and 1")
		}
		if r.ErrorStatus != 0 && (r.ErrorStatus < 400 || r.ErrorStatus > 599) {
			return d.errorf(rp, "error_status must be a 4xx or 5xx status")
		}
		if r.Latency < 0 || r.Jitter < 0 {
			return d.errorf(rp, "latency and jitter must not be negative")
		}
		if o := r.Outage; o != nil {
			switch o.Mode {
			case "", Outage503, OutageReset:
			case OutageRefuse:
				if r.Route != "*" {
					return d.errorf(rp, "outage mode refuse closes the listener and needs route \"*\"")
				}
			default:
				return d.errorf(rp, "outage mode %q is not 503, reset or refuse", o.Mode)
			}
			if o.StartIn < 0 || o.Duration < 0 {
				return d.errorf(rp, "start_in and duration must not be negative")
			}
		}
	}
	dp := append(append([]string(nil), at...), "dmf")
	if f.DMF.HangFor < 0 {
		return d.errorf(append(dp, "hang_for"), "hang_for must not be negative")
	}
	if f.DMF.FailNextImports < 0 || f.DMF.PartialNextImports < 0 {
		return d.errorf(dp, "fail_next_imports and partial_next_imports must not be negative")
	}
	if f.Throttling != nil {
		return f.Throttling.validate(d, append(append([]string(nil), at...), "throttling"))
	}
	return nil
}

func validRoute(r string) bool {
	if r == "*" {
		return true
	}
	for _, x := range routes {
		if x == r {
			return true
		}
	}
	return false
}

// faultSet holds the active faults with outage windows in absolute time.
type faultSet struct {
	mu      sync.Mutex
	faults  Faults
	windows []window // parallel to faults.Rules; zero for rules without an outage
	changed chan struct{}
	// failLeft and partialLeft count down DMF.FailNextImports and
	// DMF.PartialNextImports.
	failLeft, partialLeft int
}

type window struct {
	from, until time.Time // until zero: open-ended
}

func (w window) active(now time.Time) bool {
	if w.from.IsZero() {
		return false
	}
	return !now.Before(w.from) && (w.until.IsZero() || now.Before(w.until))
}

func newFaultSet() *faultSet { return &faultSet{changed: make(chan struct{}, 1)} }

func (fs *faultSet) set(f Faults, now time.Time) {
	fs.mu.Lock()
	fs.faults = f
	fs.failLeft, fs.partialLeft = f.DMF.FailNextImports, f.DMF.PartialNextImports
	fs.windows = make([]window, len(f.Rules))
	for i, r := range f.Rules {
		if r.Outage != nil {
			from := now.Add(r.Outage.StartIn.D())
			w := window{from: from}
			if r.Outage.Duration > 0 {
				w.until = from.Add(r.Outage.Duration.D())
			}
			fs.windows[i] = w
		}
	}
	fs.mu.Unlock()
	select {
	case fs.changed <- struct{}{}:
	default:
	}
}

func (fs *faultSet) get() Faults {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f := fs.faults
	f.DMF.FailNextImports, f.DMF.PartialNextImports = fs.failLeft, fs.partialLeft
	return f
}

// Injected DMF outcomes, as recorded in Execution.InjectedFaults.
const (
	injectedFail    = "fail_next_imports"
	injectedPartial = "partial_next_imports"
	injectedHang    = "hang_executing"
)

// takeDMFOutcome consumes one FailNextImports or PartialNextImports and
// returns the injected outcome, or "".
func (fs *faultSet) takeDMFOutcome() string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	switch {
	case fs.failLeft > 0:
		fs.failLeft--
		return injectedFail
	case fs.partialLeft > 0:
		fs.partialLeft--
		return injectedPartial
	}
	return ""
}

// dmfHang reports whether an execution that starts executing now hangs,
// and for how long (0: forever).
func (fs *faultSet) dmfHang() (bool, time.Duration) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d := fs.faults.DMF
	return d.HangExecuting || d.HangFor > 0, d.HangFor.D()
}

// dmfSummaryStatus returns the injected GetExecutionSummaryStatus value, or "".
func (fs *faultSet) dmfSummaryStatus() string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.faults.DMF.SummaryStatus
}

// plan is what applies to one request.
type plan struct {
	delay       time.Duration
	errorStatus int
	outageMode  string
	outageLeft  time.Duration
}

func (fs *faultSet) planFor(route string, now time.Time) plan {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var pl plan
	for i, r := range fs.faults.Rules {
		if r.Route != "*" && r.Route != route {
			continue
		}
		pl.delay += r.Latency.D()
		if r.Jitter > 0 {
			pl.delay += time.Duration(rand.Int64N(int64(r.Jitter) + 1))
		}
		if r.ErrorRate > 0 && pl.errorStatus == 0 && rand.Float64() < r.ErrorRate {
			pl.errorStatus = r.ErrorStatus
			if pl.errorStatus == 0 {
				pl.errorStatus = http.StatusServiceUnavailable
			}
		}
		if w := fs.windows[i]; w.active(now) && pl.outageMode == "" {
			pl.outageMode = r.Outage.Mode
			if pl.outageMode == "" {
				pl.outageMode = Outage503
			}
			if !w.until.IsZero() {
				pl.outageLeft = w.until.Sub(now)
			}
		}
	}
	return pl
}

// refuseState reports whether a refuse-mode outage is active now, and when
// the state next changes (zero if never).
func (fs *faultSet) refuseState(now time.Time) (bool, time.Time) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	down := false
	var next time.Time
	consider := func(t time.Time) {
		if !t.IsZero() && t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for i, r := range fs.faults.Rules {
		if r.Outage == nil || r.Outage.Mode != OutageRefuse {
			continue
		}
		w := fs.windows[i]
		if w.active(now) {
			down = true
		}
		consider(w.from)
		consider(w.until)
	}
	return down, next
}

// applyFaults runs the outage and error faults for a request. It returns
// the injected latency, which the caller waits out once the request holds
// its throttling slot, and false when a fault has answered (or aborted)
// the request.
func (e *Emulator) applyFaults(w http.ResponseWriter, r *http.Request, route string) (time.Duration, bool) {
	pl := e.faults.planFor(route, time.Now())
	switch pl.outageMode {
	case OutageReset, OutageRefuse:
		panic(http.ErrAbortHandler) // closes the connection without an answer
	case Outage503:
		secs := 30
		if pl.outageLeft > 0 {
			secs = max(1, int((pl.outageLeft+time.Second-1)/time.Second))
		}
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		writeODataError(w, http.StatusServiceUnavailable, "The service is unavailable (fo-emulator outage).", typeServer, "")
		return 0, false
	}
	if pl.errorStatus != 0 {
		waitDelay(r, pl.delay)
		if pl.errorStatus == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		writeODataError(w, pl.errorStatus, fmt.Sprintf("Injected fault: %d %s (fo-emulator).", pl.errorStatus, http.StatusText(pl.errorStatus)), typeServer, "")
		return 0, false
	}
	return pl.delay, true
}

// waitDelay waits out injected latency, aborting the request if the client
// goes away.
func waitDelay(r *http.Request, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		panic(http.ErrAbortHandler)
	}
}

// SetFaults replaces the injected faults. Outage windows start counting
// now.
func (e *Emulator) SetFaults(f Faults) error {
	if err := f.validate(nil, nil); err != nil {
		return err
	}
	e.faults.set(f, time.Now())
	e.throttle.setOverride(f.Throttling)
	e.log.Info().Int(logging.FieldCount, len(f.Rules)).Bool(logging.FieldThrottle, f.Throttling != nil).Msg("faults set")
	return nil
}

// Faults returns the injected faults.
func (e *Emulator) Faults() Faults { return e.faults.get() }

// runOutages closes and reopens the listener for refuse-mode outages.
func (e *Emulator) runOutages(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		down, next := e.faults.refuseState(now)
		if down != e.gate.isDown() {
			if down {
				e.log.Warn().Msg("outage: listener closed, connections refused")
				e.gate.takeDown()
				e.conns.Range(func(k, _ any) bool {
					_ = k.(net.Conn).Close()
					return true
				})
			} else if err := e.gate.bringUp(); err != nil {
				e.log.Error().Err(err).Msg("outage: reopen listener")
				next = now.Add(100 * time.Millisecond)
			} else {
				e.log.Warn().Msg("outage over: listening again")
			}
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Millisecond, time.Until(next))
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.faults.changed:
		}
	}
}

// gateListener wraps the server's listener so that an outage can close it
// and later listen again on the same address, without the http.Server
// noticing.
type gateListener struct {
	mu     sync.Mutex
	inner  net.Listener
	addr   net.Addr
	down   bool
	up     chan struct{} // closed when the gate opens again
	closed bool
	done   chan struct{}
}

func newGateListener(ln net.Listener) *gateListener {
	return &gateListener{inner: ln, addr: ln.Addr(), done: make(chan struct{})}
}

// Accept waits for a connection, riding out outages.
func (g *gateListener) Accept() (net.Conn, error) {
	for {
		g.mu.Lock()
		inner, down, up, closed := g.inner, g.down, g.up, g.closed
		g.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		if down {
			select {
			case <-up:
			case <-g.done:
			}
			continue
		}
		c, err := inner.Accept()
		if err == nil {
			return c, nil
		}
		g.mu.Lock()
		retry := !g.closed && (g.down || g.inner != inner)
		g.mu.Unlock()
		if !retry {
			return nil, err
		}
	}
}

// Addr returns the listen address, stable across outages.
func (g *gateListener) Addr() net.Addr { return g.addr }

// Close closes the listener for good.
func (g *gateListener) Close() error {
	g.close()
	return nil
}

func (g *gateListener) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.closed = true
	close(g.done)
	_ = g.inner.Close()
}

func (g *gateListener) isDown() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.down
}

func (g *gateListener) takeDown() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.down || g.closed {
		return
	}
	g.down = true
	g.up = make(chan struct{})
	_ = g.inner.Close()
}

func (g *gateListener) bringUp() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.down || g.closed {
		return nil
	}
	ln, err := net.Listen(g.addr.Network(), g.addr.String())
	if err != nil {
		return err
	}
	g.inner = ln
	g.down = false
	close(g.up)
	return nil
}
