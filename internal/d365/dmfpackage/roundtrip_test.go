package dmfpackage

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/plantgate/plantgate/internal/foemu/dmfpkg"
)

// twoEntitySpec is a picking list journal with header and lines.
func twoEntitySpec() Spec {
	return Spec{
		DefinitionGroup: "MES-PickingList",
		Entities: []Entity{
			{
				Label:        "Production order picking list journal headers",
				TargetEntity: "ProdJournalBOMHeaderEntity",
				File:         "headers.csv",
				Columns:      []string{"JOURNALNUMBER", "PRODUCTIONORDERNUMBER", "DESCRIPTION"},
			},
			{
				Label:   "Production order picking list journal lines",
				Columns: []string{"JournalNumber", "LineNumber", "ItemNumber", "Quantity", "ConsumptionDate", "IsConsumptionEnded"},
				Fields:  map[string]string{"Quantity": "BOMPROPOSALQUANTITY"},
			},
		},
	}
}

// build runs a Builder over rows (entity index, values) and returns the zip.
func build(t testing.TB, spec Spec, rows []testRow) ([]byte, Stats) {
	t.Helper()
	var buf bytes.Buffer
	dir := t.TempDir()
	b, err := New(&buf, spec, dir)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[int]int{}
	for _, r := range rows {
		line, err := b.Add(r.entity, r.values)
		if err != nil {
			t.Fatalf("Add(%d, %v): %v", r.entity, r.values, err)
		}
		counts[r.entity]++
		if line != counts[r.entity] {
			t.Fatalf("Add returned line %d, want %d", line, counts[r.entity])
		}
	}
	st, err := b.Close()
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("spool directory holds %d files after Close", len(left))
	}
	return buf.Bytes(), st
}

type testRow struct {
	entity int
	values map[string]any
}

func sampleRows() []testRow {
	at := time.Date(2026, 3, 1, 6, 4, 5, 999, time.FixedZone("CET", 3600))
	return []testRow{
		{0, map[string]any{"JOURNALNUMBER": "PJ-0001", "PRODUCTIONORDERNUMBER": "P000123", "DESCRIPTION": `Shift "A", line 1`}},
		{1, map[string]any{"JournalNumber": "PJ-0001", "LineNumber": 1, "ItemNumber": "RM-2000", "Quantity": json.Number("12.500"), "ConsumptionDate": DateOf(at), "IsConsumptionEnded": false}},
		{1, map[string]any{"JournalNumber": "PJ-0001", "LineNumber": int64(2), "ItemNumber": "Café,\r\nline\nbreak", "Quantity": 0.1 + 0.2, "ConsumptionDate": at, "IsConsumptionEnded": true}},
		{0, map[string]any{"JOURNALNUMBER": "PJ-0002", "PRODUCTIONORDERNUMBER": nil, "DESCRIPTION": "emoji 🙂 and é"}},
		{1, map[string]any{"JournalNumber": "PJ-0002", "LineNumber": uint8(1), "ItemNumber": `"quoted"`, "Quantity": float32(1.1), "ConsumptionDate": Date{}, "IsConsumptionEnded": nil}},
	}
}

func TestRoundTripThroughEmulatorReader(t *testing.T) {
	spec := twoEntitySpec()
	rows := sampleRows()
	zipBytes, st := build(t, spec, rows)
	p, err := dmfpkg.Read(zipBytes, dmfpkg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Header, (dmfpkg.Header{Description: "MES-PickingList", ManifestType: ManifestType, PackageType: "DefinitionGroup", PackageVersion: "2"}); got != want {
		t.Errorf("header = %+v, want %+v", got, want)
	}
	if got, want := p.Names(), []string{"Manifest.xml", "PackageHeader.xml", "Production order picking list journal lines.csv", "headers.csv"}; !cmp.Equal(got, want) {
		t.Errorf("names = %q, want %q", got, want)
	}
	wantManifest := dmfpkg.Manifest{DefinitionGroupName: "MES-PickingList", Description: "MES-PickingList"}
	for i, e := range spec.Entities {
		m := dmfpkg.Entity{
			EntityName: e.Label, TargetEntity: e.TargetEntity, SourceFormat: FormatCSVUnicode, InputFilePath: fileOrDefault(e),
			DefaultRefreshType: "FullPush", ExecutionUnit: 1, LevelInExecution: i + 1, SequenceInLevel: 1,
			RunBusinessLogic: true, RunBusinessValid: true, HasEntityMapList: true,
		}
		for _, c := range e.Columns {
			f := strings.ToUpper(c)
			if v, ok := e.Fields[c]; ok {
				f = v
			}
			m.EntityMapList = append(m.EntityMapList, dmfpkg.EntityMap{EntityField: f, XMLField: c})
		}
		wantManifest.Entities = append(wantManifest.Entities, m)
	}
	if diff := cmp.Diff(p.Manifest, wantManifest); diff != "" {
		t.Errorf("manifest: got -, want +:\n%s", diff)
	}
	for i, e := range p.Manifest.Entities {
		data, err := p.File(e.InputFilePath)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != st.Entities[i].UncompressedBytes {
			t.Errorf("entity %d: file is %d bytes, Stats say %d", i, len(data), st.Entities[i].UncompressedBytes)
		}
		tab, err := dmfpkg.ReadTable(e, data)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tab.Header, spec.Entities[i].Columns); diff != "" {
			t.Errorf("entity %d header: %s", i, diff)
		}
		var want [][]string
		for _, r := range rows {
			if r.entity != i {
				continue
			}
			want = append(want, readerCells(cells(t, spec.Entities[i].Columns, r.values)))
		}
		var got [][]string
		for _, r := range tab.Rows {
			got = append(got, r.Values)
		}
		if diff := cmp.Diff(got, want); diff != "" {
			t.Errorf("entity %d rows: got -, want +:\n%s", i, diff)
		}
		if st.Entities[i].Rows != len(want) {
			t.Errorf("entity %d: Stats.Rows = %d, want %d", i, st.Entities[i].Rows, len(want))
		}
	}
	if st.Rows != len(rows) || st.ZipBytes != int64(len(zipBytes)) {
		t.Errorf("stats = %+v; want %d rows, %d zip bytes", st, len(rows), len(zipBytes))
	}
}

// readerCells returns cells as encoding/csv (and so dmfpkg) reads them back:
// it turns a CRLF inside a quoted cell into LF.
func readerCells(cells []string) []string {
	for j := range cells {
		cells[j] = strings.ReplaceAll(cells[j], "\r\n", "\n")
	}
	return cells
}

// cells formats values in column order with FormatValue.
func cells(t testing.TB, columns []string, values map[string]any) []string {
	t.Helper()
	out := make([]string, len(columns))
	for j, c := range columns {
		s, err := FormatValue(values[c])
		if err != nil {
			t.Fatal(err)
		}
		out[j] = s
	}
	return out
}

func TestRoundTripCSVUTF8(t *testing.T) {
	spec := twoEntitySpec()
	for i := range spec.Entities {
		spec.Entities[i].Format = FormatCSV
	}
	rows := sampleRows()
	zipBytes, _ := build(t, spec, rows)
	p, err := dmfpkg.Read(zipBytes, dmfpkg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range p.Manifest.Entities {
		if e.SourceFormat != FormatCSV {
			t.Errorf("entity %d: SourceFormat = %q, want %q", i, e.SourceFormat, FormatCSV)
		}
		data, err := p.File(e.InputFilePath)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, bomUTF8) {
			t.Fatalf("entity %d: no UTF-8 byte order mark: % x", i, data[:4])
		}
		r := csv.NewReader(bytes.NewReader(data[3:]))
		recs, err := r.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		want := [][]string{spec.Entities[i].Columns}
		for _, row := range rows {
			if row.entity == i {
				want = append(want, readerCells(cells(t, spec.Entities[i].Columns, row.values)))
			}
		}
		if diff := cmp.Diff(recs, want); diff != "" {
			t.Errorf("entity %d: got -, want +:\n%s", i, diff)
		}
	}
}

func TestColumnErrors(t *testing.T) {
	spec := twoEntitySpec()
	full := func() map[string]any {
		return map[string]any{"JOURNALNUMBER": "J", "PRODUCTIONORDERNUMBER": "P", "DESCRIPTION": "D"}
	}
	tests := []struct {
		name    string
		values  map[string]any
		want    *ColumnError
		wantMsg string
	}{
		{
			name:   "missing",
			values: map[string]any{"JOURNALNUMBER": "J", "DESCRIPTION": "D"},
			want:   &ColumnError{Column: "PRODUCTIONORDERNUMBER", Missing: []string{"PRODUCTIONORDERNUMBER"}},
			wantMsg: `entity "Production order picking list journal headers": missing column "PRODUCTIONORDERNUMBER" ` +
				`(expected "JOURNALNUMBER", "PRODUCTIONORDERNUMBER", "DESCRIPTION")`,
		},
		{
			name:   "unknown",
			values: func() map[string]any { m := full(); m["QTY"] = 1; return m }(),
			want:   &ColumnError{Column: "QTY", Unknown: []string{"QTY"}},
			wantMsg: `entity "Production order picking list journal headers": unknown column "QTY" ` +
				`(expected "JOURNALNUMBER", "PRODUCTIONORDERNUMBER", "DESCRIPTION")`,
		},
		{
			name:   "wrong case is unknown and missing",
			values: func() map[string]any { m := full(); delete(m, "DESCRIPTION"); m["Description"] = "D"; return m }(),
			want:   &ColumnError{Column: "DESCRIPTION", Missing: []string{"DESCRIPTION"}, Unknown: []string{"Description"}},
			wantMsg: `entity "Production order picking list journal headers": missing column "DESCRIPTION", unknown column "Description" ` +
				`(expected "JOURNALNUMBER", "PRODUCTIONORDERNUMBER", "DESCRIPTION")`,
		},
		{
			name:   "empty",
			values: nil,
			want:   &ColumnError{Column: "JOURNALNUMBER", Missing: []string{"JOURNALNUMBER", "PRODUCTIONORDERNUMBER", "DESCRIPTION"}},
			wantMsg: `entity "Production order picking list journal headers": missing column "JOURNALNUMBER", "PRODUCTIONORDERNUMBER", "DESCRIPTION" ` +
				`(expected "JOURNALNUMBER", "PRODUCTIONORDERNUMBER", "DESCRIPTION")`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			b, err := New(&buf, spec, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.Add(0, tt.values)
			var ce *ColumnError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *ColumnError", err)
			}
			tt.want.Entity = spec.Entities[0].Label
			tt.want.Expected = spec.Entities[0].Columns
			if diff := cmp.Diff(ce, tt.want); diff != "" {
				t.Errorf("got -, want +:\n%s", diff)
			}
			if ce.Error() != tt.wantMsg {
				t.Errorf("message:\n got %s\nwant %s", ce.Error(), tt.wantMsg)
			}
			// Nothing was written: the next good row is line 1, and the file
			// holds it alone.
			if line, err := b.Add(0, full()); err != nil || line != 1 {
				t.Fatalf("Add after error = %d, %v; want 1, nil", line, err)
			}
			checkRows(t, b, &buf, 0, [][]string{{"J", "P", "D"}})
		})
	}
}

func TestValueErrorWritesNothing(t *testing.T) {
	spec := twoEntitySpec()
	tests := []struct {
		name  string
		value any
		want  error
	}{
		{"invalid utf-8", "caf\xe9", ErrInvalidUTF8},
		{"map", map[string]any{"a": 1}, ErrUnsupportedValue},
		{"slice", []string{"a"}, ErrUnsupportedValue},
		{"NaN", json.Number("NaN"), ErrInvalidNumber},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			b, err := New(&buf, spec, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			// A long first cell, so a partial row would show.
			_, err = b.Add(0, map[string]any{"JOURNALNUMBER": strings.Repeat("x", 100), "PRODUCTIONORDERNUMBER": tt.value, "DESCRIPTION": "D"})
			var ve *ValueError
			if !errors.As(err, &ve) || !errors.Is(err, tt.want) || ve.Column != "PRODUCTIONORDERNUMBER" {
				t.Fatalf("got %v, want a *ValueError for PRODUCTIONORDERNUMBER wrapping %v", err, tt.want)
			}
			if _, err := b.Add(0, map[string]any{"JOURNALNUMBER": "J", "PRODUCTIONORDERNUMBER": "P", "DESCRIPTION": "D"}); err != nil {
				t.Fatal(err)
			}
			checkRows(t, b, &buf, 0, [][]string{{"J", "P", "D"}})
		})
	}
}

// checkRows closes b and checks the data rows of entity i in the zip.
func checkRows(t *testing.T, b *Builder, buf *bytes.Buffer, i int, want [][]string) {
	t.Helper()
	if _, err := b.Close(); err != nil {
		t.Fatal(err)
	}
	p, err := dmfpkg.Read(buf.Bytes(), dmfpkg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := p.Manifest.Entities[i]
	data, err := p.File(e.InputFilePath)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := dmfpkg.ReadTable(e, data)
	if err != nil {
		t.Fatal(err)
	}
	var got [][]string
	for _, r := range tab.Rows {
		got = append(got, r.Values)
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("rows: got -, want +:\n%s", diff)
	}
}

func TestBuilderLifecycle(t *testing.T) {
	spec := twoEntitySpec()
	row := map[string]any{"JOURNALNUMBER": "J", "PRODUCTIONORDERNUMBER": "P", "DESCRIPTION": "D"}

	t.Run("bad index", func(t *testing.T) {
		b, err := New(&bytes.Buffer{}, spec, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer b.Abort()
		for _, i := range []int{-1, 2} {
			if _, err := b.Add(i, row); !errors.Is(err, ErrEntityIndex) {
				t.Errorf("Add(%d) = %v, want ErrEntityIndex", i, err)
			}
		}
	})
	t.Run("abort writes nothing and removes spools", func(t *testing.T) {
		dir := t.TempDir()
		var buf bytes.Buffer
		b, err := New(&buf, spec, dir)
		if err != nil {
			t.Fatal(err)
		}
		if left, _ := os.ReadDir(dir); len(left) != 2 {
			t.Errorf("spools = %d, want 2", len(left))
		}
		if _, err := b.Add(0, row); err != nil {
			t.Fatal(err)
		}
		b.Abort()
		b.Abort()
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("spools left after Abort: %d", len(left))
		}
		if buf.Len() != 0 {
			t.Errorf("Abort wrote %d bytes", buf.Len())
		}
		if _, err := b.Add(0, row); !errors.Is(err, ErrClosed) {
			t.Errorf("Add after Abort = %v, want ErrClosed", err)
		}
		if _, err := b.Close(); !errors.Is(err, ErrClosed) {
			t.Errorf("Close after Abort = %v, want ErrClosed", err)
		}
	})
	t.Run("close twice", func(t *testing.T) {
		b, err := New(&bytes.Buffer{}, spec, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Close(); !errors.Is(err, ErrClosed) {
			t.Errorf("second Close = %v, want ErrClosed", err)
		}
		if _, err := b.Add(0, row); !errors.Is(err, ErrClosed) {
			t.Errorf("Add after Close = %v, want ErrClosed", err)
		}
		b.Abort()
	})
	t.Run("invalid spec", func(t *testing.T) {
		dir := t.TempDir()
		_, err := New(&bytes.Buffer{}, Spec{}, dir)
		if !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("New = %v, want ErrInvalidSpec", err)
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("spools left: %d", len(left))
		}
	})
	t.Run("missing tmp dir", func(t *testing.T) {
		if _, err := New(&bytes.Buffer{}, spec, t.TempDir()+"/nope"); err == nil {
			t.Error("New in a missing directory succeeded")
		}
	})
	t.Run("empty entities still get a header row", func(t *testing.T) {
		zipBytes, st := build(t, spec, nil)
		p, err := dmfpkg.Read(zipBytes, dmfpkg.Options{})
		if err != nil {
			t.Fatal(err)
		}
		data, err := p.File("headers.csv")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(data), string(encodeUTF16LE("JOURNALNUMBER,PRODUCTIONORDERNUMBER,DESCRIPTION\r\n")); got != want {
			t.Errorf("data = %q, want %q", got, want)
		}
		if st.Rows != 0 || len(st.Entities) != 2 {
			t.Errorf("stats = %+v", st)
		}
	})
}

// TestManyRowsCrossFlushes checks rows spanning several internal flushes and
// every compression level.
func TestManyRowsCrossFlushes(t *testing.T) {
	for _, level := range []int{0, 1, 6, 9} {
		t.Run(fmt.Sprint("level ", level), func(t *testing.T) {
			spec := Spec{DefinitionGroup: "Big", CompressionLevel: level, Entities: []Entity{{Label: "Lines", Columns: []string{"A", "B"}}}}
			var rows []testRow
			for i := range 5000 {
				rows = append(rows, testRow{0, map[string]any{"A": i, "B": fmt.Sprintf("ü-%d,🙂", i)}})
			}
			zipBytes, st := build(t, spec, rows)
			p, err := dmfpkg.Read(zipBytes, dmfpkg.Options{})
			if err != nil {
				t.Fatal(err)
			}
			data, err := p.File("Lines.csv")
			if err != nil {
				t.Fatal(err)
			}
			tab, err := dmfpkg.ReadTable(p.Manifest.Entities[0], data)
			if err != nil {
				t.Fatal(err)
			}
			if len(tab.Rows) != 5000 || st.Rows != 5000 {
				t.Fatalf("rows = %d, stats %d", len(tab.Rows), st.Rows)
			}
			for i, r := range tab.Rows {
				if want := []string{fmt.Sprint(i), fmt.Sprintf("ü-%d,🙂", i)}; !cmp.Equal(r.Values, want) {
					t.Fatalf("row %d = %q, want %q", i, r.Values, want)
				}
			}
		})
	}
}
