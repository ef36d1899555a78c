package dmfpackage

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// goldenSpec holds names that need XML escaping, a target entity and a
// field map.
func goldenSpec() Spec {
	return Spec{
		DefinitionGroup: "MES <PickingList> & Co",
		Description:     "Picking list from the line 3 edge gateway",
		Entities: []Entity{
			{
				Label:        "Production order picking list journal headers",
				TargetEntity: "ProdJournalBOMHeaderEntity",
				File:         "headers.csv",
				Columns:      []string{"JOURNALNUMBER", "PRODUCTIONORDERNUMBER"},
			},
			{
				Label:   "Production order picking list journal lines",
				Columns: []string{"JournalNumber", "ItemNumber", "Quantity", "ConsumptionDate", "Posted", "Note"},
				Fields:  map[string]string{"Quantity": "BOMPROPOSALQUANTITY"},
			},
		},
	}
}

// goldenRows holds values that break naive CSV: separators, quotes, CR and
// LF, a non-BMP emoji, "é", and every value kind.
func goldenRows() []map[string]any {
	at := time.Date(2026, 3, 1, 6, 4, 5, 500_000_000, time.FixedZone("CET", 3600))
	return []map[string]any{
		{"JournalNumber": "PJ-0001", "ItemNumber": "RM-2000", "Quantity": json.Number("12.500"), "ConsumptionDate": DateOf(at), "Posted": true, "Note": nil},
		{"JournalNumber": "PJ-0001", "ItemNumber": "a,b", "Quantity": 0.1, "ConsumptionDate": at, "Posted": false, "Note": `say "hi"`},
		{"JournalNumber": "PJ-0001", "ItemNumber": "cr\rlf\r\nlf\n", "Quantity": -3, "ConsumptionDate": "", "Posted": "No", "Note": "🙂 café é"},
		{"JournalNumber": "PJ-0001", "ItemNumber": `"`, "Quantity": json.Number("1.5e-3"), "ConsumptionDate": nil, "Posted": nil, "Note": " leading and trailing "},
	}
}

// checkGolden compares got with testdata/name, or rewrites it with -update.
// On a mismatch it shows both as text.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		g, _ := decodeText(got)
		w, _ := decodeText(want)
		t.Errorf("%s differs (run with -update if the change is intended)\n got %q\nwant %q", name, g, w)
	}
}

func TestGoldenManifest(t *testing.T) {
	checkGolden(t, "Manifest.xml.golden", ManifestXML(goldenSpec()))
}

func TestGoldenPackageHeader(t *testing.T) {
	checkGolden(t, "PackageHeader.xml.golden", PackageHeaderXML(goldenSpec()))
}

// TestGoldenPackage builds the golden package and compares its zip listing
// and each file's exact bytes with the golden files, for both data formats.
func TestGoldenPackage(t *testing.T) {
	for _, format := range []string{FormatCSVUnicode, FormatCSV} {
		t.Run(format, func(t *testing.T) {
			spec := goldenSpec()
			spec.Entities[1].Format = format
			var buf bytes.Buffer
			b, err := New(&buf, spec, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Add(0, map[string]any{"JOURNALNUMBER": "PJ-0001", "PRODUCTIONORDERNUMBER": "P000123"}); err != nil {
				t.Fatal(err)
			}
			for _, r := range goldenRows() {
				if _, err := b.Add(1, r); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := b.Close(); err != nil {
				t.Fatal(err)
			}
			zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
			if err != nil {
				t.Fatal(err)
			}
			var listing strings.Builder
			files := map[string][]byte{}
			for _, f := range zr.File {
				rc, err := f.Open()
				if err != nil {
					t.Fatal(err)
				}
				data, err := io.ReadAll(rc) // checks the CRC too
				_ = rc.Close()
				if err != nil {
					t.Fatalf("%s: %v", f.Name, err)
				}
				files[f.Name] = data
				fmt.Fprintf(&listing, "%s method=%d size=%d crc=%08x\n", f.Name, f.Method, f.UncompressedSize64, f.CRC32)
			}
			suffix := map[string]string{FormatCSVUnicode: "csv-unicode", FormatCSV: "csv"}[format]
			checkGolden(t, "listing-"+suffix+".golden", []byte(listing.String()))
			if !bytes.Equal(files["Manifest.xml"], ManifestXML(spec)) {
				t.Error("Manifest.xml in the zip differs from ManifestXML")
			}
			if !bytes.Equal(files["PackageHeader.xml"], PackageHeaderXML(spec)) {
				t.Error("PackageHeader.xml in the zip differs from PackageHeaderXML")
			}
			checkGolden(t, "lines-"+suffix+".golden", files["Production order picking list journal lines.csv"])
		})
	}
}
