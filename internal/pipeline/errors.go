package pipeline

import (
	"errors"
	"fmt"
	"time"
)

// ErrNotReady is returned by a Prober whose peer is not reachable yet.
var ErrNotReady = errors.New("not ready")

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps err so IsPermanent reports true: the records are
// dead-lettered with err's text and never retried. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// ThrottleError asks the runner to wait at least After before writing to
// this sink again; the batch is retried without counting as a failure.
type ThrottleError struct {
	After time.Duration
	Err   error
}

func (e *ThrottleError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("throttled, retry after %s", e.After)
	}
	return fmt.Sprintf("throttled, retry after %s: %v", e.After, e.Err)
}

func (e *ThrottleError) Unwrap() error { return e.Err }

// Throttle returns a *ThrottleError.
func Throttle(after time.Duration, err error) error { return &ThrottleError{After: after, Err: err} }

// PartialError reports a batch where some records were delivered, some were
// rejected for good and the rest should be retried. Indexes refer to the
// batch passed to Write. Records in neither Accepted nor Rejected are retried
// (Err, if set, says why).
type PartialError struct {
	Accepted []int
	// Rejected maps a batch index to the reason it was rejected.
	Rejected map[int]error
	Err      error
}

func (e *PartialError) Error() string {
	msg := fmt.Sprintf("partial write: %d accepted, %d rejected", len(e.Accepted), len(e.Rejected))
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *PartialError) Unwrap() error { return e.Err }

// Outcome is the classified result for one record.
type Outcome int

// Outcomes of a write for one record.
const (
	OutcomeOK Outcome = iota
	OutcomePermanent
	OutcomeRetry
)

// ForEach writes batch one record at a time with fn, keeping order per key:
// after a record of key K fails with a retryable error, the later records
// of K in this batch are not attempted. It returns nil if all succeeded, or
// the error Write should return (a *PartialError, or the first retryable
// error if nothing succeeded and nothing was rejected). A *ThrottleError or
// a cancelled ctx stops the loop; the remaining records are retried.
func ForEach(ctx requestContext, batch []Record, fn func(i int, r Record) error) error {
	var (
		accepted []int
		rejected map[int]error
		firstErr error
		blocked  map[string]bool
	)
	for i, r := range batch {
		if ctx.Err() != nil {
			if firstErr == nil {
				firstErr = ctx.Err()
			}
			break
		}
		if blocked[r.Key] {
			continue
		}
		err := fn(i, r)
		switch {
		case err == nil:
			accepted = append(accepted, i)
		case IsPermanent(err):
			if rejected == nil {
				rejected = map[int]error{}
			}
			rejected[i] = err
		default:
			if firstErr == nil {
				firstErr = err
			}
			var te *ThrottleError
			if errors.As(err, &te) {
				goto done
			}
			if blocked == nil {
				blocked = map[string]bool{}
			}
			blocked[r.Key] = true
		}
	}
done:
	if len(accepted) == len(batch) {
		return nil
	}
	if len(accepted) == 0 && len(rejected) == 0 {
		return firstErr
	}
	if len(accepted) == 0 && len(rejected) == len(batch) && len(batch) == 1 {
		return rejected[0]
	}
	return &PartialError{Accepted: accepted, Rejected: rejected, Err: firstErr}
}

// requestContext is the part of context.Context ForEach needs.
type requestContext interface{ Err() error }
