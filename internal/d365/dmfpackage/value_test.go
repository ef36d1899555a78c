package dmfpackage

import (
	"encoding/json"
	"errors"
	"math"
	"net/netip"
	"testing"
	"time"
)

type qty float64

type code string

func TestFormatValue(t *testing.T) {
	s := "ptr"
	var nilPtr *string
	cet := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		v    any
		want string
		err  error
	}{
		{"nil", nil, "", nil},
		{"string", "a,b\"c", "a,b\"c", nil},
		{"empty string", "", "", nil},
		{"non-BMP", "🙂é", "🙂é", nil},
		{"invalid utf-8", "caf\xe9", "", ErrInvalidUTF8},
		{"json.Number plain", json.Number("12.500"), "12.500", nil},
		{"json.Number long", json.Number("12345678901234567890.123456789012345678"), "12345678901234567890.123456789012345678", nil},
		{"json.Number negative", json.Number("-0.5"), "-0.5", nil},
		{"json.Number exponent", json.Number("1.5e3"), "1500", nil},
		{"json.Number exponent keeps digits", json.Number("1.50e1"), "15.0", nil},
		{"json.Number negative exponent", json.Number("-1.5E-3"), "-0.0015", nil},
		{"json.Number exponent plus", json.Number("25e+0"), "25", nil},
		{"json.Number zero exponent", json.Number("0e5"), "0", nil},
		{"json.Number 0.5e1", json.Number("0.5e1"), "5", nil},
		{"json.Number 12e-1", json.Number("12e-1"), "1.2", nil},
		{"json.Number huge exponent", json.Number("1e401"), "", ErrInvalidNumber},
		{"json.Number not a number", json.Number("12,5"), "", ErrInvalidNumber},
		{"json.Number leading zero", json.Number("012"), "", ErrInvalidNumber},
		{"json.Number empty", json.Number(""), "", ErrInvalidNumber},
		{"json.Number dot", json.Number("1."), "", ErrInvalidNumber},
		{"json.Number NaN", json.Number("NaN"), "", ErrInvalidNumber},
		{"float64", 0.1, "0.1", nil},
		{"float64 sum", func() float64 { a, b := 0.1, 0.2; return a + b }(), "0.30000000000000004", nil},
		{"float64 big", 1e21, "1000000000000000000000", nil},
		{"float64 small", 1e-7, "0.0000001", nil},
		{"float64 negative zero", math.Copysign(0, -1), "0", nil},
		{"float64 NaN", math.NaN(), "", ErrNotFinite},
		{"float64 Inf", math.Inf(-1), "", ErrNotFinite},
		{"float32", float32(1.1), "1.1", nil},
		{"int", -42, "-42", nil},
		{"int64", int64(math.MaxInt64), "9223372036854775807", nil},
		{"uint64", uint64(math.MaxUint64), "18446744073709551615", nil},
		{"int8", int8(-8), "-8", nil},
		{"uint16", uint16(16), "16", nil},
		{"bool true", true, "Yes", nil},
		{"bool false", false, "No", nil},
		{"time", time.Date(2026, 3, 1, 0, 30, 0, 999_999_999, cet), "2026-02-28T23:30:00", nil},
		{"zero time", time.Time{}, "", nil},
		{"time year 10000", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), "", ErrTimeRange},
		{"date", Date{2026, time.March, 1}, "2026-03-01", nil},
		{"date of local time", DateOf(time.Date(2026, 3, 1, 0, 30, 0, 0, cet)), "2026-03-01", nil},
		{"zero date", Date{}, "", nil},
		{"no such date", Date{2026, time.February, 30}, "", ErrTimeRange},
		{"named float", qty(2.5), "2.5", nil},
		{"named string", code("A-1"), "A-1", nil},
		{"pointer", &s, "ptr", nil},
		{"nil pointer", nilPtr, "", nil},
		{"text marshaler", netip.MustParseAddr("10.0.0.1"), "10.0.0.1", nil},
		{"duration", time.Second, "", ErrUnsupportedValue},
		{"bytes", []byte("x"), "", ErrUnsupportedValue},
		{"map", map[string]any{}, "", ErrUnsupportedValue},
		{"slice", []any{1}, "", ErrUnsupportedValue},
		{"array", [2]int{}, "", ErrUnsupportedValue},
		{"struct", struct{ A int }{}, "", ErrUnsupportedValue},
		{"func", func() {}, "", ErrUnsupportedValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FormatValue(tt.v)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err == nil && got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDateString(t *testing.T) {
	if got := (Date{2026, time.March, 1}).String(); got != "2026-03-01" {
		t.Errorf("got %q", got)
	}
}

func TestFormatValueAllocations(t *testing.T) {
	buf := make([]byte, 0, 64)
	vals := []any{"RM-2000", 12.5, int64(7), true, json.Number("1.25")}
	allocs := testing.AllocsPerRun(100, func() {
		for _, v := range vals {
			buf, _ = appendValue(buf[:0], v)
		}
	})
	if allocs != 0 {
		t.Errorf("appendValue allocates %.1f times per row", allocs)
	}
}
