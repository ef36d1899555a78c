package config

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var (
	errMissingUnit = errors.New("missing unit")
	errNegative    = errors.New("negative value")
	errUnknownUnit = errors.New("unknown unit")
)

// ParseDuration parses a Go duration ("1h30m", "500ms") extended with days
// ("2d", "1d12h", "1.5d"). A bare number other than 0 is rejected, since its
// unit would be a guess; so is a negative duration.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if s == "0" {
		return 0, nil
	}
	if strings.HasPrefix(s, "-") {
		return 0, errNegative
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, errMissingUnit
	}
	var total time.Duration
	rest := s
	// Split off "<number>d" components; the rest is a Go duration.
	var goPart strings.Builder
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		j := i
		for j < len(rest) && (rest[j] < '0' || rest[j] > '9') && rest[j] != '.' {
			j++
		}
		num, unit := rest[:i], rest[i:j]
		if num == "" || unit == "" {
			return 0, errors.New("invalid duration")
		}
		if unit == "d" {
			f, err := strconv.ParseFloat(num, 64)
			if err != nil || f*24 > float64(math.MaxInt64)/float64(time.Hour) {
				return 0, errors.New("invalid duration")
			}
			add := time.Duration(f * 24 * float64(time.Hour))
			if total > math.MaxInt64-add {
				return 0, errors.New("duration out of range")
			}
			total += add
		} else {
			goPart.WriteString(rest[:j])
		}
		rest = rest[j:]
	}
	if goPart.Len() > 0 {
		d, err := time.ParseDuration(goPart.String())
		if err != nil {
			return 0, errors.New("invalid duration")
		}
		if total > math.MaxInt64-d {
			return 0, errors.New("duration out of range")
		}
		total += d
	}
	return Duration(total), nil
}

// String formats d like time.Duration.String without trailing zero units:
// "24h", "1h30m", "2m", "500ms".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseDuration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

var sizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"kb":  1000,
	"mb":  1000 * 1000,
	"gb":  1000 * 1000 * 1000,
	"tb":  1000 * 1000 * 1000 * 1000,
	"pb":  1000 * 1000 * 1000 * 1000 * 1000,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
	"pib": 1 << 50,
}

var sizeRe = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$`)

// ParseSize parses a byte count: a plain integer, or a number with a
// decimal SI unit (kB, MB, GB, TB, PB: powers of 1000) or a binary IEC unit
// (KiB, MiB, GiB, TiB, PiB: powers of 1024). Units are case-insensitive; a
// fractional result is rounded down to whole bytes. Negative sizes are
// rejected.
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-") {
		return 0, errNegative
	}
	m := sizeRe.FindStringSubmatch(s)
	if m == nil {
		return 0, errors.New("invalid size")
	}
	mult, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("%w %q", errUnknownUnit, m[2])
	}
	r, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return 0, errors.New("invalid size")
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if !n.IsInt64() {
		return 0, errors.New("size out of range")
	}
	return Size(n.Int64()), nil
}

// String formats s with the largest binary unit that divides it exactly
// ("2GiB", "512MiB"), else the largest such decimal unit ("10MB"), else as
// a plain byte count.
func (s Size) String() string {
	n := int64(s)
	if n == 0 {
		return "0"
	}
	for _, u := range []struct {
		name string
		mult int64
	}{
		{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"PB", 1e15}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3},
	} {
		if n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseSize.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

var rateRe = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)/([smh])$`)

// ParseRate parses a rate like "0.2/s", "40/s", "100/m" or "2/h" and returns
// it in records per second.
func ParseRate(s string) (float64, error) {
	m := rateRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, errors.New("invalid rate")
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil || math.IsInf(f, 0) {
		return 0, errors.New("invalid rate")
	}
	switch m[2] {
	case "m":
		f /= 60
	case "h":
		f /= 3600
	}
	return f, nil
}

// PerSecond returns the declared rate in records per second, or 0 when
// Rate is empty. Load has already validated Rate.
func (e Expect) PerSecond() float64 {
	f, err := ParseRate(e.Rate)
	if err != nil {
		return 0
	}
	return f
}
