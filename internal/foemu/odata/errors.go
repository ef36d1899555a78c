package odata

import (
	"errors"
	"fmt"
)

// ErrSyntax reports a $filter expression, key predicate or literal that does
// not parse.
var ErrSyntax = errors.New("syntax error")

// ErrUnsupported reports valid OData syntax that Finance & Operations (and
// therefore the emulator) does not support, such as the has and in
// operators, arithmetic, or query functions.
var ErrUnsupported = errors.New("not supported")

// ErrType reports operands of incompatible types in a $filter comparison.
var ErrType = errors.New("incompatible types")

// ErrUnknownProperty reports a property name that the entity type lacks.
var ErrUnknownProperty = errors.New("unknown property")

// ErrMalformedBatch reports a $batch body that is not a valid
// multipart/mixed batch.
var ErrMalformedBatch = errors.New("malformed batch")

// ErrTooManyOperations reports a $batch request with more operations than
// the configured maximum.
var ErrTooManyOperations = errors.New("too many batch operations")

// Error is an error of one of the kinds above with the message Finance &
// Operations gives (full sentences, as F&O words them).
type Error struct {
	Kind error  // one of the sentinels of this package
	Msg  string // F&O's message
}

// Error returns the kind and the message.
func (e *Error) Error() string { return e.Kind.Error() + ": " + e.Msg }

// Unwrap returns the kind, for errors.Is.
func (e *Error) Unwrap() error { return e.Kind }

// errorf builds an *Error.
func errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}
