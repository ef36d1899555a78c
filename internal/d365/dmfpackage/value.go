package dmfpackage

import (
	"encoding"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"time"
	"unicode/utf8"
)

// DateTimeLayout is the layout FormatValue writes a time.Time in, after
// converting it to UTC: the invariant ISO 8601 form F&O reads for UtcDateTime
// fields, without fraction or zone.
const DateTimeLayout = "2006-01-02T15:04:05"

// DateLayout is the layout FormatValue writes a Date in.
const DateLayout = "2006-01-02"

// Date is a calendar date without time or zone, for F&O date fields
// (TransDate, ConsumptionDate, ...). The zero Date formats as an empty cell.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// DateOf returns the calendar date of t in t's own location (not UTC: a
// shift that ends at 01:00 local time on the 2nd is dated the 2nd).
func DateOf(t time.Time) Date {
	y, m, d := t.Date()
	return Date{y, m, d}
}

// String returns the date as FormatValue writes it, e.g. "2026-03-01".
func (d Date) String() string {
	s, err := FormatValue(d)
	if err != nil {
		return fmt.Sprintf("%04d-%02d-%02d", d.Year, int(d.Month), d.Day)
	}
	return s
}

// FormatValue returns v as the text of a data file cell, in the invariant
// format DMF expects:
//
//   - nil, a nil pointer, the zero time.Time and the zero Date: "" (an empty
//     cell, which DMF imports as the field's default);
//   - string: as is; it must be valid UTF-8 (ErrInvalidUTF8);
//   - json.Number: its exact decimal text ("1.50" stays "1.50"); an exponent
//     is expanded exactly, without rounding ("1.5e-3" -> "0.0015");
//   - float64, float32: shortest exact decimal, never an exponent
//     (strconv 'f', -1); -0 is "0"; NaN and ±Inf fail (ErrNotFinite);
//   - signed and unsigned integers: decimal;
//   - bool: "Yes" or "No" (the NoYes enum);
//   - time.Time: converted to UTC, DateTimeLayout ("2026-03-01T05:04:00");
//     fractions of a second are dropped (F&O keeps seconds);
//   - Date: DateLayout ("2026-03-01");
//   - an encoding.TextMarshaler (decimal and UUID types): its text;
//   - a named type of one of these kinds (type Qty float64): as its kind;
//     a non-nil pointer: as what it points to.
//
// Maps, slices (including []byte), arrays, structs, channels, functions and
// time.Duration fail with ErrUnsupportedValue: a cell cannot hold them and a
// duration has no single F&O meaning.
func FormatValue(v any) (string, error) {
	b, err := appendValue(nil, v)
	return string(b), err
}

// appendValue appends the cell text of v to dst. On error dst may hold a
// partial value; callers discard it.
func appendValue(dst []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return dst, nil
	case string:
		if !utf8.ValidString(x) {
			return dst, fmt.Errorf("%w: %q", ErrInvalidUTF8, x)
		}
		return append(dst, x...), nil
	case json.Number:
		return appendNumber(dst, string(x))
	case float64:
		return appendFloat(dst, x, 64)
	case float32:
		return appendFloat(dst, float64(x), 32)
	case int:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(dst, x, 10), nil
	case int32:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int16:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int8:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case uint:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(dst, x, 10), nil
	case uint32:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint16:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint8:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case bool:
		if x {
			return append(dst, "Yes"...), nil
		}
		return append(dst, "No"...), nil
	case time.Time:
		if x.IsZero() {
			return dst, nil
		}
		x = x.UTC()
		if y := x.Year(); y < 1 || y > 9999 {
			return dst, fmt.Errorf("%w: year %d", ErrTimeRange, y)
		}
		return x.AppendFormat(dst, DateTimeLayout), nil
	case Date:
		if x == (Date{}) {
			return dst, nil
		}
		t := time.Date(x.Year, x.Month, x.Day, 0, 0, 0, 0, time.UTC)
		if y, m, d := t.Date(); y != x.Year || m != x.Month || d != x.Day {
			return dst, fmt.Errorf("%w: no such date %04d-%02d-%02d", ErrTimeRange, x.Year, int(x.Month), x.Day)
		}
		if x.Year < 1 || x.Year > 9999 {
			return dst, fmt.Errorf("%w: year %d", ErrTimeRange, x.Year)
		}
		return t.AppendFormat(dst, DateLayout), nil
	case time.Duration:
		return dst, fmt.Errorf("%w: time.Duration %v (format it as hours or seconds first)", ErrUnsupportedValue, x)
	case []byte:
		return dst, fmt.Errorf("%w: []byte (convert it to a string)", ErrUnsupportedValue)
	}
	return appendReflect(dst, v)
}

func appendReflect(dst []byte, v any) ([]byte, error) {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return dst, nil
		}
		return appendValue(dst, rv.Elem().Interface())
	}
	if tm, ok := v.(encoding.TextMarshaler); ok {
		b, err := tm.MarshalText()
		if err != nil {
			return dst, fmt.Errorf("%w: %T: %w", ErrUnsupportedValue, v, err)
		}
		if !utf8.Valid(b) {
			return dst, fmt.Errorf("%w: %T marshals to %q", ErrInvalidUTF8, v, b)
		}
		return append(dst, b...), nil
	}
	switch rv.Kind() {
	case reflect.String:
		return appendValue(dst, rv.String())
	case reflect.Bool:
		return appendValue(dst, rv.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(dst, rv.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.AppendUint(dst, rv.Uint(), 10), nil
	case reflect.Float32:
		return appendFloat(dst, rv.Float(), 32)
	case reflect.Float64:
		return appendFloat(dst, rv.Float(), 64)
	}
	return dst, fmt.Errorf("%w: %T", ErrUnsupportedValue, v)
}

func appendFloat(dst []byte, f float64, bits int) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return dst, fmt.Errorf("%w: %v", ErrNotFinite, f)
	}
	if f == 0 {
		f = 0 // no "-0"
	}
	return strconv.AppendFloat(dst, f, 'f', -1, bits), nil
}

// maxExponent bounds the exponent of a json.Number FormatValue expands, so
// "1e999999999" cannot make a gigabyte of zeros.
const maxExponent = 400

// appendNumber appends the JSON number literal s as a plain decimal. A
// literal without exponent is appended unchanged; an exponent moves the
// decimal point, keeping every digit.
func appendNumber(dst []byte, s string) ([]byte, error) {
	bad := func() ([]byte, error) { return dst, fmt.Errorf("%w: %q", ErrInvalidNumber, s) }
	i := 0
	neg := false
	if i < len(s) && s[i] == '-' {
		neg = true
		i++
	}
	intStart := i
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	default:
		return bad()
	}
	intPart := s[intStart:i]
	frac := ""
	if i < len(s) && s[i] == '.' {
		i++
		fs := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		if i == fs {
			return bad()
		}
		frac = s[fs:i]
	}
	if i == len(s) {
		return append(dst, s...), nil
	}
	if s[i] != 'e' && s[i] != 'E' {
		return bad()
	}
	i++
	expNeg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		expNeg = s[i] == '-'
		i++
	}
	es := i
	exp := 0
	for i < len(s) && isDigit(s[i]) {
		if exp <= maxExponent {
			exp = exp*10 + int(s[i]-'0')
		}
		i++
	}
	if i == es || i != len(s) {
		return bad()
	}
	if exp > maxExponent {
		return dst, fmt.Errorf("%w: %q: exponent beyond ±%d", ErrInvalidNumber, s, maxExponent)
	}
	if expNeg {
		exp = -exp
	}
	// digits with the decimal point after position point.
	digits := intPart + frac
	point := len(intPart) + exp
	var intOut, fracOut string
	switch {
	case point <= 0:
		intOut = "0"
		fracOut = zeros(-point) + digits
	case point >= len(digits):
		intOut = digits + zeros(point-len(digits))
	default:
		intOut, fracOut = digits[:point], digits[point:]
	}
	// Trim leading zeros of the integer part ("0.5e1" -> "05" -> "5").
	for len(intOut) > 1 && intOut[0] == '0' {
		intOut = intOut[1:]
	}
	if neg {
		dst = append(dst, '-')
	}
	dst = append(dst, intOut...)
	if fracOut != "" {
		dst = append(dst, '.')
		dst = append(dst, fracOut...)
	}
	return dst, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func zeros(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = '0'
	}
	return string(b)
}
