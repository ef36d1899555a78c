package dmfpkg

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Table is a data file read into a header row and data rows.
type Table struct {
	// Header holds the column names of the first row.
	Header []string
	// Rows holds the data rows in file order.
	Rows []Row
	// Format is the source data format the table was read as.
	Format string
}

// Row is one data row.
type Row struct {
	// Line is the 1-based line (CSV) or row number (EXCEL) in the file.
	Line int
	// Values holds the cells; a row may have fewer or more cells than the
	// header.
	Values []string
}

// ReadTable reads the data file of entity e in its declared SourceFormat.
// Format names match without regard to case. Errors wrap ErrNotUnicode,
// ErrLineEnding, ErrFormat or ErrUnsupportedFormat.
func ReadTable(e Entity, data []byte) (*Table, error) {
	switch {
	case strings.EqualFold(e.SourceFormat, FormatCSVUnicode):
		return ReadCSVUnicode(data)
	case strings.EqualFold(e.SourceFormat, FormatExcel):
		return ReadExcel(data, e.ExcelSheetName)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedFormat, e.SourceFormat)
}

// ReadCSVUnicode reads a CSV-Unicode file: UTF-16 LE with a byte order
// mark, comma separated, '"' as text qualifier, CRLF line ends. A file that
// is not UTF-16 LE with a byte order mark fails with ErrNotUnicode; a file
// with bare LF (or CR) line ends fails with ErrLineEnding.
func ReadCSVUnicode(data []byte) (*Table, error) {
	if len(data) < 2 || data[0] != 0xFF || data[1] != 0xFE {
		return nil, ErrNotUnicode
	}
	text, err := decodeUTF16(data[2:], false)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotUnicode, err)
	}
	if line, bad := firstBareLineEnd(text); bad != "" {
		return nil, fmt.Errorf("%w: line %d ends with %s", ErrLineEnding, line, bad)
	}
	r := csv.NewReader(strings.NewReader(text))
	r.FieldsPerRecord = -1
	r.ReuseRecord = false
	t := &Table{Format: FormatCSVUnicode}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrFormat, err)
		}
		line, _ := r.FieldPos(0)
		if t.Header == nil {
			for i := range rec {
				rec[i] = strings.TrimSpace(rec[i])
			}
			t.Header = rec
			continue
		}
		t.Rows = append(t.Rows, Row{Line: line, Values: rec})
	}
	if t.Header == nil {
		return nil, fmt.Errorf("%w: the file has no header row", ErrFormat)
	}
	return t, nil
}

// firstBareLineEnd finds the first line end outside quotes that is not
// CRLF and returns its 1-based line number and a description.
func firstBareLineEnd(s string) (int, string) {
	line := 1
	inQuotes := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			inQuotes = !inQuotes
		case '\r':
			if inQuotes {
				continue
			}
			if i+1 >= len(s) || s[i+1] != '\n' {
				return line, "CR only"
			}
			i++
			line++
		case '\n':
			if inQuotes {
				line++
				continue
			}
			return line, "LF only"
		}
	}
	return 0, ""
}

// WriteCSVUnicode encodes a header and rows as a CSV-Unicode file: UTF-16
// LE with a byte order mark, CRLF line ends, fields quoted where needed.
func WriteCSVUnicode(header []string, rows [][]string) []byte {
	var b strings.Builder
	w := csv.NewWriter(&b)
	w.UseCRLF = true
	_ = w.Write(header) // a strings.Builder never fails
	for _, r := range rows {
		_ = w.Write(r)
	}
	w.Flush()
	return EncodeUTF16LE(b.String())
}
