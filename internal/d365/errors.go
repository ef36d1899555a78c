package d365

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ErrCircuitOpen is wrapped by calls refused because the environment's
// circuit breaker is open: F&O or its identity platform failed repeatedly
// and is given time to recover.
var ErrCircuitOpen = errors.New("circuit open")

// ErrInDoubt is wrapped by calls whose request was sent but whose outcome
// is unknown (a timeout or a dropped connection before the answer).
var ErrInDoubt = errors.New("outcome unknown")

// ErrToken is wrapped by failures to obtain an access token.
var ErrToken = errors.New("acquire token")

// Error is a failed call to F&O or its identity platform. Classify and
// Env.Do return it wrapped in the pipeline error kind that tells the flow
// engine what to do (pipeline.Permanent, pipeline.Throttle or transient).
type Error struct {
	// Op names the call, e.g. "POST /data/ProductionOrderHeaders".
	Op string
	// Status is the HTTP status; 0 when no answer arrived.
	Status int
	// Code is the error code of the body (OData error.code, AAD error).
	Code string
	// Message is the most useful text of the answer: F&O's
	// innererror.message, else error.message, else the body, truncated.
	Message string
	// RetryAfter is the Retry-After of the answer, if any.
	RetryAfter time.Duration
	// InDoubt is set when the request was sent and no answer arrived.
	InDoubt bool
	// Err is the underlying error (network errors, ErrCircuitOpen, ErrToken).
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": %d %s", e.Status, http.StatusText(e.Status))
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	} else if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.InDoubt {
		b.WriteString(" (the request was sent; its outcome is unknown)")
	}
	return b.String()
}

// Unwrap returns the underlying error, and ErrInDoubt for in-doubt calls.
func (e *Error) Unwrap() []error {
	var out []error
	if e.Err != nil {
		out = append(out, e.Err)
	}
	if e.InDoubt {
		out = append(out, ErrInDoubt)
	}
	return out
}

// StatusOf returns the HTTP status of a failed call, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// IsInDoubt reports whether err is a call whose request was sent without
// an answer: F&O may or may not have processed it.
func IsInDoubt(err error) bool { return errors.Is(err, ErrInDoubt) }

// IsForbidden reports whether F&O answered 403: the application user lacks
// the permission. The records are dead-lettered and the sink reports
// itself unhealthy until a later call succeeds.
func IsForbidden(err error) bool { return StatusOf(err) == http.StatusForbidden }

// IsNotFound reports whether F&O answered 404.
func IsNotFound(err error) bool { return StatusOf(err) == http.StatusNotFound }

// IsDuplicate reports whether a create failed because the record already
// exists: 409, or F&O's write error "... The record already exists."
// (which F&O sends with 400, or 500 inside $batch).
func IsDuplicate(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	if e.Status == http.StatusConflict {
		return true
	}
	if e.Status != http.StatusBadRequest && e.Status != http.StatusInternalServerError {
		return false
	}
	m := strings.ToLower(e.Message)
	return strings.Contains(m, "already exists") || strings.Contains(m, "duplicate key")
}
