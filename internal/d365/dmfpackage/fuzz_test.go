package dmfpackage

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/plantgate/plantgate/internal/foemu/dmfpkg"
)

// FuzzCSVRoundTrip adds random strings as cells, reads the package back with
// the emulator's reader, and requires the same cells (invalid UTF-8 must be
// refused, never replaced).
func FuzzCSVRoundTrip(f *testing.F) {
	for _, seed := range [][2]string{
		{"", ""},
		{"a,b", `"quoted"`},
		{"cr\r", "lf\n"},
		{"\r\n", "\"\r\n\""},
		{"🙂", "é"},
		{"caf\xe9", "ok"},
		{" lead", "trail "},
		{"\x00", "\uFEFF"},
		{"\ud7ff\ue000", "\U0010FFFF"},
	} {
		f.Add(seed[0], seed[1])
	}
	spec := Spec{DefinitionGroup: "Fuzz", Entities: []Entity{{Label: "Lines", Columns: []string{"A", "B", "C"}}}}
	f.Fuzz(func(t *testing.T, a, b string) {
		var buf bytes.Buffer
		bl, err := New(&buf, spec, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		row := map[string]any{"A": a, "B": b, "C": "end"}
		_, err = bl.Add(0, row)
		if !utf8.ValidString(a) || !utf8.ValidString(b) {
			if !errors.Is(err, ErrInvalidUTF8) {
				t.Fatalf("Add(%q, %q) = %v, want ErrInvalidUTF8", a, b, err)
			}
			bl.Abort()
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		// A second row checks the first one ended where it should.
		if _, err := bl.Add(0, map[string]any{"A": "x", "B": "y", "C": "z"}); err != nil {
			t.Fatal(err)
		}
		if _, err := bl.Close(); err != nil {
			t.Fatal(err)
		}
		p, err := dmfpkg.Read(buf.Bytes(), dmfpkg.Options{})
		if err != nil {
			t.Fatal(err)
		}
		data, err := p.File("Lines.csv")
		if err != nil {
			t.Fatal(err)
		}
		tab, err := dmfpkg.ReadTable(p.Manifest.Entities[0], data)
		if err != nil {
			t.Fatalf("read back %q, %q: %v", a, b, err)
		}
		// encoding/csv reads a quoted CRLF as LF.
		norm := func(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }
		want := [][]string{{norm(a), norm(b), "end"}, {"x", "y", "z"}}
		if len(tab.Rows) != 2 {
			t.Fatalf("%q, %q: read %d rows: %v", a, b, len(tab.Rows), tab.Rows)
		}
		for i, r := range tab.Rows {
			if strings.Join(r.Values, "\x1f") != strings.Join(want[i], "\x1f") {
				t.Fatalf("row %d: got %q, want %q", i, r.Values, want[i])
			}
		}
	})
}
