package dmfpackage

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidSpec is wrapped by every *SpecError: a Spec that Validate, New
// or the manifest template check rejects.
var ErrInvalidSpec = errors.New("invalid DMF package spec")

// ErrClosed is returned by Add and Close after Close or Abort.
var ErrClosed = errors.New("dmf package builder is closed")

// ErrEntityIndex is returned by Add for an entity index outside Spec.Entities.
var ErrEntityIndex = errors.New("entity index out of range")

// ErrUnsupportedValue is wrapped by FormatValue for a value a data file cell
// cannot hold: maps, slices, structs, channels, functions, durations.
var ErrUnsupportedValue = errors.New("value cannot be a data file cell")

// ErrInvalidUTF8 is wrapped by FormatValue for a string (or text marshaled
// value) that is not valid UTF-8. It is never silently replaced.
var ErrInvalidUTF8 = errors.New("string is not valid UTF-8")

// ErrNotFinite is wrapped by FormatValue for NaN and infinite floats, which
// F&O's real fields cannot hold.
var ErrNotFinite = errors.New("float is NaN or infinite")

// ErrInvalidNumber is wrapped by FormatValue for a json.Number that is not a
// JSON number literal, or whose exponent is out of range.
var ErrInvalidNumber = errors.New("invalid json.Number")

// ErrTimeRange is wrapped by FormatValue for a time or date outside the
// years 1 to 9999.
var ErrTimeRange = errors.New("time out of range")

// SpecError lists every problem found in a Spec, in the order of the Spec's
// fields. It matches ErrInvalidSpec with errors.Is.
type SpecError struct {
	// Problems holds one precise message per problem, e.g.
	// `entity 2 "Lines": duplicate column "QTY" (column 1 is "qty")`.
	Problems []string
}

func (e *SpecError) Error() string {
	return ErrInvalidSpec.Error() + ": " + strings.Join(e.Problems, "; ")
}

// Is reports whether target is ErrInvalidSpec.
func (e *SpecError) Is(target error) bool { return target == ErrInvalidSpec }

// ColumnError is returned by Add when the values of a row do not have
// exactly the entity's columns as keys. Nothing is written for that row.
type ColumnError struct {
	Entity   string   // the entity's Label
	Column   string   // the first missing column, else the first unknown key (in sorted order)
	Missing  []string // columns without a value, in column order
	Unknown  []string // keys that are not columns, sorted
	Expected []string // the entity's columns, in order
}

func (e *ColumnError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "entity %q: ", e.Entity)
	if len(e.Missing) > 0 {
		fmt.Fprintf(&b, "missing column %s", quoteList(e.Missing))
	}
	if len(e.Unknown) > 0 {
		if len(e.Missing) > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "unknown column %s", quoteList(e.Unknown))
	}
	fmt.Fprintf(&b, " (expected %s)", quoteList(e.Expected))
	return b.String()
}

// ValueError is returned by Add when a value cannot be formatted for its
// column (see FormatValue). Nothing is written for that row. It unwraps to
// the FormatValue error (ErrUnsupportedValue, ErrInvalidUTF8, ...).
type ValueError struct {
	Entity string // the entity's Label
	Column string // the column whose value failed
	Err    error  // the FormatValue error
}

func (e *ValueError) Error() string {
	return fmt.Sprintf("entity %q: column %q: %v", e.Entity, e.Column, e.Err)
}

// Unwrap returns the FormatValue error.
func (e *ValueError) Unwrap() error { return e.Err }

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}
