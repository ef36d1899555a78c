// Package odata holds the protocol pieces of the fo-emulator's OData service
// that do not depend on the emulator's state: the $filter grammar that
// Dynamics 365 Finance & Operations accepts, key predicates such as
// (dataAreaId='USMF',ProductionOrderNumber='P000101'), and the
// multipart/mixed $batch request and response format.
//
// Everything here parses bytes that come from outside, so every function
// returns an error instead of panicking on malformed input; ParseBatch and
// ParseFilter are fuzzed.
package odata
