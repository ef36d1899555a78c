// Package codec decodes the payloads sources receive (JSON, CSV lines, raw
// bytes) into the values flow expressions see. Decoders never panic on any
// input; they return an error that the flow engine turns into a dead letter
// carrying the raw bytes.
package codec

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Decoder turns one payload into a value.
type Decoder interface {
	Decode(raw []byte) (any, error)
}

// Options select and configure a decoder.
type Options struct {
	// Format is json (default), csv or raw.
	Format string
	// CSVHeader names the columns of a csv payload; required for csv.
	CSVHeader []string
	// CSVDelimiter is one character; default ",".
	CSVDelimiter string
	// MaxBytes rejects larger payloads (0: no limit).
	MaxBytes int
}

// ErrTooLarge is returned for a payload over Options.MaxBytes.
var ErrTooLarge = errors.New("payload too large")

// New builds the decoder for o.
func New(o Options) (Decoder, error) {
	var d Decoder
	switch strings.ToLower(o.Format) {
	case "", "json":
		d = jsonDecoder{}
	case "csv":
		if len(o.CSVHeader) == 0 {
			return nil, errors.New("csv format needs a header (the column names)")
		}
		delim := ','
		if o.CSVDelimiter != "" {
			r, n := utf8.DecodeRuneInString(o.CSVDelimiter)
			if n != len(o.CSVDelimiter) || r == '"' || r == '\r' || r == '\n' {
				return nil, fmt.Errorf("csv delimiter %q must be one character other than a quote or newline", o.CSVDelimiter)
			}
			delim = r
		}
		d = csvDecoder{header: o.CSVHeader, delim: delim}
	case "raw":
		d = rawDecoder{}
	default:
		return nil, fmt.Errorf("unknown format %q (want json, csv or raw)", o.Format)
	}
	if o.MaxBytes > 0 {
		d = limited{d: d, max: o.MaxBytes}
	}
	return d, nil
}

type limited struct {
	d   Decoder
	max int
}

func (l limited) Decode(raw []byte) (any, error) {
	if len(raw) > l.max {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(raw), l.max)
	}
	return l.d.Decode(raw)
}

type jsonDecoder struct{}

// streamReader is the reader under a pooled json.Decoder: each payload is
// set as its next input.
type streamReader struct{ b []byte }

func (r *streamReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// pooledJSON is a json.Decoder with UseNumber over a streamReader.
type pooledJSON struct {
	r   streamReader
	dec *json.Decoder
}

// jsonPool keeps decoders between payloads. A json.Decoder (with its
// scanner and a read buffer of at least 512 bytes) made for every
// message was a sixth of everything ingest allocated. A decoder goes
// back only after a payload it read whole: the value decoded and the
// input ended right after it (Token returned io.EOF, which a Decoder
// does not keep), so it holds nothing of that payload but trailing
// white space and the next Decode starts afresh. A decoder that saw an
// error is dropped, since a Decoder keeps its read errors.
// TestPooledJSONDecoderMatchesFresh and FuzzDecode hold it to a fresh
// decoder's results.
var jsonPool = sync.Pool{New: func() any {
	p := &pooledJSON{}
	p.dec = json.NewDecoder(&p.r)
	p.dec.UseNumber()
	return p
}}

// maxPooledPayload keeps a decoder that read a large payload (its buffer
// grew to that size) out of the pool.
const maxPooledPayload = 64 << 10

// Decode parses one JSON value. Integers that fit int64 become int64, other
// numbers float64, so expressions can compute with them.
func (jsonDecoder) Decode(raw []byte) (any, error) {
	if !utf8.Valid(raw) {
		return nil, errors.New("json: payload is not valid UTF-8 (binary data?)")
	}
	p := jsonPool.Get().(*pooledJSON)
	v, err := p.decode(raw)
	if err == nil && len(raw) <= maxPooledPayload {
		jsonPool.Put(p)
	}
	return v, err
}

// decode decodes raw; after an error p must not be used again.
func (p *pooledJSON) decode(raw []byte) (any, error) {
	p.r.b = raw
	v, err := decodeOne(p.dec)
	p.r.b = nil
	return v, err
}

func decodeOne(dec *json.Decoder) (any, error) {
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("json: empty payload")
		}
		return nil, fmt.Errorf("json: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("json: trailing data after the value")
	}
	return numbers(v), nil
}

func numbers(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			t[k] = numbers(x)
		}
		return t
	case []any:
		for i, x := range t {
			t[i] = numbers(x)
		}
		return t
	case json.Number:
		if i, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			return i
		}
		if f, err := strconv.ParseFloat(string(t), 64); err == nil && !math.IsInf(f, 0) {
			return f
		}
		return string(t)
	}
	return v
}

type csvDecoder struct {
	header []string
	delim  rune
}

// Decode parses one CSV line into a map keyed by the header.
func (c csvDecoder) Decode(raw []byte) (any, error) {
	if !utf8.Valid(raw) {
		return nil, errors.New("csv: payload is not valid UTF-8")
	}
	r := csv.NewReader(bytes.NewReader(raw))
	r.Comma = c.delim
	r.FieldsPerRecord = -1
	rec, err := r.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("csv: empty payload")
		}
		return nil, fmt.Errorf("csv: %w", err)
	}
	if _, err := r.Read(); !errors.Is(err, io.EOF) {
		return nil, errors.New("csv: more than one line in the payload")
	}
	if len(rec) != len(c.header) {
		return nil, fmt.Errorf("csv: %d columns, header has %d", len(rec), len(c.header))
	}
	m := make(map[string]any, len(rec))
	for i, h := range c.header {
		m[h] = rec[i]
	}
	return m, nil
}

type rawDecoder struct{}

// Decode returns the payload as a string when it is UTF-8, else as bytes.
func (rawDecoder) Decode(raw []byte) (any, error) {
	if utf8.Valid(raw) {
		return string(raw), nil
	}
	return bytes.Clone(raw), nil
}
