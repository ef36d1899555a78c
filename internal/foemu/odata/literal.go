package odata

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Kind is the type of a Value.
type Kind int

// Value kinds. KindTime covers Edm.Date and Edm.DateTimeOffset, which
// Finance & Operations uses for date and date-time fields alike.
const (
	KindNull Kind = iota
	KindString
	KindNumber
	KindBool
	KindTime
	KindEnum
)

// String returns the Edm type name used in error messages.
func (k Kind) String() string {
	switch k {
	case KindNull:
		return "null"
	case KindString:
		return "Edm.String"
	case KindNumber:
		return "Edm.Decimal"
	case KindBool:
		return "Edm.Boolean"
	case KindTime:
		return "Edm.DateTimeOffset"
	case KindEnum:
		return "Edm.Enum"
	}
	return "Edm.Unknown"
}

// Value is a typed value: a literal in a URL, or a property value handed to
// Filter.Match.
type Value struct {
	Kind Kind // value type
	// Str holds a KindString value or the member name of a KindEnum value.
	Str string
	// EnumType is the qualified enum type of a KindEnum literal, such as
	// Microsoft.Dynamics.DataEntities.NoYes; empty for property values.
	EnumType string
	// Num holds a KindNumber value.
	Num float64
	// Bool holds a KindBool value.
	Bool bool
	// Time holds a KindTime value, in UTC.
	Time time.Time
	// DateOnly is set for a KindTime literal written as a date (2024-05-01).
	DateOnly bool
}

// Null, String, Number, Bool, Time and Enum build values.
var Null = Value{Kind: KindNull}

// String returns a KindString value.
func String(s string) Value { return Value{Kind: KindString, Str: s} }

// Number returns a KindNumber value.
func Number(f float64) Value { return Value{Kind: KindNumber, Num: f} }

// Bool returns a KindBool value.
func Bool(b bool) Value { return Value{Kind: KindBool, Bool: b} }

// Time returns a KindTime value.
func Time(t time.Time) Value { return Value{Kind: KindTime, Time: t.UTC()} }

// Enum returns a KindEnum value for member of an enum.
func Enum(member string) Value { return Value{Kind: KindEnum, Str: member} }

// Go returns the value as a plain Go value for JSON: nil, string, float64,
// bool, or an RFC 3339 string for times.
func (v Value) Go() any {
	switch v.Kind {
	case KindString, KindEnum:
		return v.Str
	case KindNumber:
		return v.Num
	case KindBool:
		return v.Bool
	case KindTime:
		if v.DateOnly {
			return v.Time.Format(time.DateOnly)
		}
		return v.Time.Format(time.RFC3339Nano)
	}
	return nil
}

// FormatLiteral writes v in URL literal syntax, as used in key predicates:
// 'text' with doubled quotes, numbers, true/false, null, dates unquoted.
func FormatLiteral(v Value) string {
	switch v.Kind {
	case KindString:
		return "'" + strings.ReplaceAll(v.Str, "'", "''") + "'"
	case KindEnum:
		if v.EnumType != "" {
			return v.EnumType + "'" + strings.ReplaceAll(v.Str, "'", "''") + "'"
		}
		return "'" + strings.ReplaceAll(v.Str, "'", "''") + "'"
	case KindNumber:
		return strconv.FormatFloat(v.Num, 'f', -1, 64)
	case KindBool:
		return strconv.FormatBool(v.Bool)
	case KindTime:
		if v.DateOnly {
			return v.Time.Format(time.DateOnly)
		}
		return v.Time.Format(time.RFC3339)
	}
	return "null"
}

var (
	dateRe = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)
	timeRe = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$`)
	guidRe = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)
	numRe  = regexp.MustCompile(`^-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$`)
)

// ParseTime parses an OData date (2024-05-01) or date-time offset
// (2024-05-01T10:00:00Z, with optional seconds, fraction and offset).
func ParseTime(s string) (Value, error) {
	if dateRe.MatchString(s) {
		t, err := time.Parse(time.DateOnly, s)
		if err != nil {
			return Null, errorf(ErrSyntax, "invalid date %q", s)
		}
		return Value{Kind: KindTime, Time: t, DateOnly: true}, nil
	}
	if timeRe.MatchString(s) {
		layouts := []string{time.RFC3339Nano, "2006-01-02T15:04Z07:00"}
		for _, l := range layouts {
			if t, err := time.Parse(l, s); err == nil {
				return Time(t), nil
			}
		}
	}
	return Null, errorf(ErrSyntax, "invalid date/time %q", s)
}

// parseBareLiteral classifies an unquoted literal that starts with a digit,
// a dot or a minus sign: a number, a date, a date-time or a GUID.
func parseBareLiteral(s string) (Value, error) {
	switch {
	case numRe.MatchString(s):
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return Null, errorf(ErrSyntax, "invalid number %q", s)
		}
		return Number(f), nil
	case dateRe.MatchString(s) || timeRe.MatchString(s):
		return ParseTime(s)
	case guidRe.MatchString(s):
		return String(s), nil
	}
	return Null, errorf(ErrSyntax, "unrecognized literal %q", s)
}
