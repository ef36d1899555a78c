package odata

import "errors"

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
