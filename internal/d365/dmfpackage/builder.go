package dmfpackage

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/flate"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"
	"time"
)

// flushSize is how many encoded bytes an entity gathers before it hands them
// to the CRC and the compressor.
const flushSize = 64 << 10

// Stats describes a package Close wrote.
type Stats struct {
	// Entities holds one entry per Spec.Entities, in order.
	Entities []EntityStats
	// Rows is the number of data rows in all data files.
	Rows int
	// UncompressedBytes and CompressedBytes sum all files of the zip:
	// Manifest.xml, PackageHeader.xml and the data files.
	UncompressedBytes, CompressedBytes int64
	// ZipBytes is the size of the zip written to the io.Writer.
	ZipBytes int64
}

// EntityStats describes one data file.
type EntityStats struct {
	Label string // the entity's Label
	File  string // its name in the zip
	Rows  int    // data rows, header excluded
	// UncompressedBytes is the data file's size (byte order mark and header
	// included); CompressedBytes its deflated size in the zip.
	UncompressedBytes, CompressedBytes int64
}

// Builder streams rows into a DMF data package. Rows of each entity are
// encoded and deflated as they arrive into a spool file in tmpDir; Close
// writes the zip with zip.Writer.CreateRaw from the spools, so memory stays
// flat however many rows there are, and nothing reaches the io.Writer before
// Close. A Builder is not safe for concurrent use.
type Builder struct {
	w        io.Writer
	spec     resolved
	ents     []*entityWriter
	modified time.Time
	closed   bool
	err      error // sticky spool failure
}

type entityWriter struct {
	entity
	spool   *os.File
	bw      *bufio.Writer
	cw      countWriter // compressed bytes into the spool
	fw      *flate.Writer
	crc     uint32
	raw     int64 // uncompressed bytes
	rows    int
	utf16   bool
	row     []byte // one row in UTF-8
	out     []byte // encoded rows not yet compressed
	scratch []byte // quoting
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// New validates spec and starts a package that Close writes to w. tmpDir
// holds one spool file per entity ("" means os.TempDir()); Close and Abort
// remove them. Each data file gets its header row now.
func New(w io.Writer, spec Spec, tmpDir string) (*Builder, error) {
	r, err := resolve(spec)
	if err != nil {
		return nil, err
	}
	level := r.CompressionLevel
	if level == 0 {
		level = DefaultCompressionLevel
	}
	b := &Builder{w: w, spec: r, modified: time.Now()}
	for _, e := range r.entities {
		ew, err := newEntityWriter(e, tmpDir, level)
		if err != nil {
			b.Abort()
			return nil, err
		}
		b.ents = append(b.ents, ew)
	}
	return b, nil
}

func newEntityWriter(e entity, tmpDir string, level int) (*entityWriter, error) {
	f, err := os.CreateTemp(tmpDir, "dmfpackage-*.spool")
	if err != nil {
		return nil, fmt.Errorf("create spool: %w", err)
	}
	ew := &entityWriter{entity: e, spool: f, utf16: e.Format == FormatCSVUnicode}
	ew.bw = bufio.NewWriterSize(f, 128<<10)
	ew.cw.w = ew.bw
	ew.fw, err = flate.NewWriter(&ew.cw, level)
	if err != nil { // unreachable: resolve checked the level
		ew.discard()
		return nil, fmt.Errorf("start deflate: %w", err)
	}
	ew.out = make([]byte, 0, flushSize+4096)
	if ew.utf16 {
		ew.out = append(ew.out, bomUTF16LE...)
	} else {
		ew.out = append(ew.out, bomUTF8...)
	}
	row := ew.row[:0]
	for j, c := range e.Columns {
		if j > 0 {
			row = append(row, ',')
		}
		row = append(row, c...) // resolve rejects names that need quotes
	}
	ew.row = append(row, '\r', '\n')
	if err := ew.emit(); err != nil {
		ew.discard()
		return nil, err
	}
	return ew, nil
}

// Add appends one row to entity i (an index into Spec.Entities). values must
// have exactly the entity's columns as keys: a missing column or an unknown
// key fails with *ColumnError, a value FormatValue rejects with *ValueError,
// and nothing is written for that row. It returns the row's 1-based number
// among the entity's data rows (the header is not counted; a cell holding a
// line break does not shift later numbers).
func (b *Builder) Add(i int, values map[string]any) (line int, err error) {
	if b.closed {
		return 0, ErrClosed
	}
	if b.err != nil {
		return 0, b.err
	}
	if i < 0 || i >= len(b.ents) {
		return 0, fmt.Errorf("%w: %d, the spec has %d entities", ErrEntityIndex, i, len(b.ents))
	}
	e := b.ents[i]
	if len(values) != len(e.Columns) {
		return 0, e.columnError(values)
	}
	row := e.row[:0]
	for j, c := range e.Columns {
		if j > 0 {
			row = append(row, ',')
		}
		v, ok := values[c]
		if !ok {
			return 0, e.columnError(values)
		}
		start := len(row)
		row, err = appendValue(row, v)
		if err != nil {
			e.row = row
			return 0, &ValueError{Entity: e.Label, Column: c, Err: err}
		}
		if mayNeedQuotes(v) && needsQuotes(row[start:]) {
			row, e.scratch = quoteTail(row, start, e.scratch)
		}
	}
	e.row = append(row, '\r', '\n')
	if err := e.emit(); err != nil {
		b.err = err
		return 0, err
	}
	e.rows++
	return e.rows, nil
}

// emit encodes e.row into the pending output and compresses it when full.
func (e *entityWriter) emit() error {
	if e.utf16 {
		e.out = appendUTF16(e.out, e.row)
	} else {
		e.out = append(e.out, e.row...)
	}
	if len(e.out) >= flushSize {
		return e.flush()
	}
	return nil
}

func (e *entityWriter) flush() error {
	if len(e.out) == 0 {
		return nil
	}
	e.crc = crc32.Update(e.crc, crc32.IEEETable, e.out)
	e.raw += int64(len(e.out))
	_, err := e.fw.Write(e.out)
	e.out = e.out[:0]
	if err != nil {
		return fmt.Errorf("write spool of %q: %w", e.File, err)
	}
	return nil
}

// finish completes the spool and rewinds it for copying.
func (e *entityWriter) finish() error {
	if err := e.flush(); err != nil {
		return err
	}
	if err := e.fw.Close(); err != nil {
		return fmt.Errorf("write spool of %q: %w", e.File, err)
	}
	if err := e.bw.Flush(); err != nil {
		return fmt.Errorf("write spool of %q: %w", e.File, err)
	}
	if _, err := e.spool.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind spool of %q: %w", e.File, err)
	}
	return nil
}

func (e *entityWriter) discard() {
	if e.spool == nil {
		return
	}
	name := e.spool.Name()
	_ = e.spool.Close()
	_ = os.Remove(name)
	e.spool = nil
}

func (e *entityWriter) columnError(values map[string]any) error {
	ce := &ColumnError{Entity: e.Label, Expected: Columns(e.Entity)}
	for _, c := range e.Columns {
		if _, ok := values[c]; !ok {
			ce.Missing = append(ce.Missing, c)
		}
	}
	for k := range values {
		if !contains(e.Columns, k) {
			ce.Unknown = append(ce.Unknown, k)
		}
	}
	sort.Strings(ce.Unknown)
	switch {
	case len(ce.Missing) > 0:
		ce.Column = ce.Missing[0]
	case len(ce.Unknown) > 0:
		ce.Column = ce.Unknown[0]
	}
	return ce
}

// Close writes the zip to w: Manifest.xml, PackageHeader.xml, then the data
// files in Spec.Entities order (the order of F&O's own exports), and removes
// the spools. It does not close w. After Close, Add and Close return
// ErrClosed.
func (b *Builder) Close() (Stats, error) {
	if b.closed {
		return Stats{}, ErrClosed
	}
	defer b.Abort()
	if b.err != nil {
		b.closed = true
		return Stats{}, b.err
	}
	b.closed = true
	var st Stats
	for _, e := range b.ents {
		if err := e.finish(); err != nil {
			return Stats{}, err
		}
	}
	cw := &countWriter{w: b.w}
	zw := zip.NewWriter(cw)
	level := b.spec.CompressionLevel
	if level == 0 {
		level = DefaultCompressionLevel
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{manifestFile, b.manifest()},
		{headerFile, encodeUTF16LE(renderHeader(b.spec))},
	} {
		var z bytes.Buffer
		fw, _ := flate.NewWriter(&z, level) // resolve checked the level
		_, _ = fw.Write(f.data)             // a bytes.Buffer never fails
		_ = fw.Close()
		w, err := zw.CreateRaw(&zip.FileHeader{
			Name: f.name, Method: zip.Deflate, Modified: b.modified,
			CRC32: crc32.ChecksumIEEE(f.data), CompressedSize64: uint64(z.Len()), UncompressedSize64: uint64(len(f.data)),
		})
		if err == nil {
			_, err = w.Write(z.Bytes())
		}
		if err != nil {
			return Stats{}, fmt.Errorf("write %s: %w", f.name, err)
		}
		st.UncompressedBytes += int64(len(f.data))
		st.CompressedBytes += int64(z.Len())
	}
	for _, e := range b.ents {
		w, err := zw.CreateRaw(&zip.FileHeader{
			Name: e.File, Method: zip.Deflate, Modified: b.modified,
			CRC32: e.crc, CompressedSize64: uint64(e.cw.n), UncompressedSize64: uint64(e.raw),
		})
		if err != nil {
			return Stats{}, fmt.Errorf("write %s: %w", e.File, err)
		}
		n, err := io.Copy(w, e.spool)
		if err != nil {
			return Stats{}, fmt.Errorf("write %s: %w", e.File, err)
		}
		if n != e.cw.n {
			return Stats{}, fmt.Errorf("write %s: spool holds %d bytes, %d were written to it", e.File, n, e.cw.n)
		}
		st.Entities = append(st.Entities, EntityStats{
			Label: e.Label, File: e.File, Rows: e.rows, UncompressedBytes: e.raw, CompressedBytes: e.cw.n,
		})
		st.Rows += e.rows
		st.UncompressedBytes += e.raw
		st.CompressedBytes += e.cw.n
	}
	if err := zw.Close(); err != nil {
		return Stats{}, fmt.Errorf("write zip: %w", err)
	}
	st.ZipBytes = cw.n
	return st, nil
}

func (b *Builder) manifest() []byte {
	if len(b.spec.ManifestTemplate) > 0 {
		return b.spec.ManifestTemplate
	}
	return encodeUTF16LE(renderManifest(b.spec))
}

// Abort removes the spools and ends the builder; nothing is written to w.
// It is safe to call more than once and after Close.
func (b *Builder) Abort() {
	b.closed = true
	for _, e := range b.ents {
		e.discard()
	}
}
