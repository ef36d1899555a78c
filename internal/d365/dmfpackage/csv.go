package dmfpackage

import (
	"encoding/json"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Byte order marks written at the start of data files.
var (
	bomUTF16LE = []byte{0xFF, 0xFE}
	bomUTF8    = []byte{0xEF, 0xBB, 0xBF}
)

// needsQuotes reports whether a cell must be enclosed in the text
// qualifier: it holds the separator, the qualifier, CR or LF.
func needsQuotes(cell []byte) bool {
	for _, c := range cell {
		if c == ',' || c == '"' || c == '\r' || c == '\n' {
			return true
		}
	}
	return false
}

// mayNeedQuotes reports whether the text of v can hold a separator, a
// quote or a line break: numbers, booleans, dates and times never do.
func mayNeedQuotes(v any) bool {
	switch v.(type) {
	case nil, int, int64, int32, uint, uint64, uint32, float64, float32, bool, json.Number, time.Time, Date:
		return false
	}
	return true
}

// quoteTail rewrites row[start:] as a quoted cell with doubled quotes, using
// scratch as temporary space; it returns the row and the scratch buffer.
func quoteTail(row []byte, start int, scratch []byte) ([]byte, []byte) {
	scratch = append(scratch[:0], row[start:]...)
	row = append(row[:start], '"')
	last := 0
	for i, c := range scratch {
		if c == '"' {
			row = append(row, scratch[last:i+1]...)
			row = append(row, '"')
			last = i + 1
		}
	}
	row = append(row, scratch[last:]...)
	return append(row, '"'), scratch
}

// appendUTF16 appends the valid UTF-8 text s to dst as UTF-16 LE, with
// surrogate pairs for characters beyond the BMP. ASCII takes a fast path.
// Invalid UTF-8 (which callers reject earlier) becomes U+FFFD.
func appendUTF16(dst []byte, s []byte) []byte {
	n := len(dst)
	need := n + 2*len(s) // UTF-16 never takes more than 2 bytes per UTF-8 byte
	if cap(dst) < need {
		grown := make([]byte, n, need+need/2)
		copy(grown, dst)
		dst = grown
	}
	dst = dst[:need]
	j := n
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			dst[j] = c
			dst[j+1] = 0
			j += 2
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		i += size
		if r >= 0x10000 {
			r1, r2 := utf16.EncodeRune(r)
			dst[j], dst[j+1] = byte(r1), byte(r1>>8)
			dst[j+2], dst[j+3] = byte(r2), byte(r2>>8)
			j += 4
			continue
		}
		dst[j], dst[j+1] = byte(r), byte(r>>8)
		j += 2
	}
	return dst[:j]
}
