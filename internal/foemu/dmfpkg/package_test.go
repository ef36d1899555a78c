package dmfpkg

import (
	"archive/zip"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// referencePackage returns the package F&O exported that the repository
// keeps in testdata (see testdata/README.md).
func referencePackage(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "usmf_asset-major-types-01.zip"))
	if err != nil {
		t.Fatalf("read the reference package: %v", err)
	}
	return b
}

func TestReadReferencePackage(t *testing.T) {
	p, err := Read(referencePackage(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Header.PackageVersion, "1"; got != want {
		t.Errorf("PackageVersion = %q, want %q", got, want)
	}
	if got, want := p.Header.ManifestType, ManifestType; got != want {
		t.Errorf("ManifestType = %q, want %q", got, want)
	}
	if got, want := p.Manifest.DefinitionGroupName, "Asset-Major-Types"; got != want {
		t.Errorf("DefinitionGroupName = %q, want %q", got, want)
	}
	if len(p.Manifest.Entities) != 1 {
		t.Fatalf("entities = %d, want 1", len(p.Manifest.Entities))
	}
	e := p.Manifest.Entities[0]
	want := Entity{
		EntityName: "Fixed asset major type", SourceFormat: "EXCEL", InputFilePath: "Fixed asset major type.xlsx",
		ExecutionUnit: 1, LevelInExecution: 1, SequenceInLevel: 1, RunBusinessLogic: true, RunBusinessValid: true,
		HasEntityMapList: true, EntityMapList: MapColumns("DESCRIPTION", "MAJORTYPEID"),
	}
	if diff := cmp.Diff(e, want); diff != "" {
		t.Errorf("entity: got -, want +:\n%s", diff)
	}
	data, err := p.File(e.InputFilePath)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := ReadTable(e, data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tab.Header, []string{"MAJORTYPEID", "DESCRIPTION"}); diff != "" {
		t.Errorf("header: %s", diff)
	}
	if got := len(tab.Rows); got != 11 {
		t.Errorf("rows = %d, want 11", got)
	}
	if diff := cmp.Diff(tab.Rows[0], Row{Line: 2, Values: []string{"COMP", "Computer hardware"}}); diff != "" {
		t.Errorf("first row: %s", diff)
	}
}

func buildPackage(t testing.TB, m Manifest, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Build(&buf, Header{Description: m.DefinitionGroupName}, m, files); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func csvManifest() Manifest {
	return Manifest{DefinitionGroupName: "MES-PickingList", Entities: []Entity{{
		EntityName: "Production order picking list journal lines", SourceFormat: FormatCSVUnicode,
		InputFilePath: "lines.csv", HasEntityMapList: true, EntityMapList: MapColumns("JOURNALNUMBER", "ITEMNUMBER"),
		RunBusinessLogic: true, RunBusinessValid: true,
	}}}
}

func TestBuildReadRoundTrip(t *testing.T) {
	csv := WriteCSVUnicode([]string{"JOURNALNUMBER", "ITEMNUMBER"}, [][]string{{"J1", "RM-2000"}, {"J1", `with "quote", comma`}})
	p, err := Read(buildPackage(t, csvManifest(), map[string][]byte{"lines.csv": csv}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	wantM := csvManifest()
	wantM.Entities[0].DefaultRefreshType = "FullPush" // defaults the writer fills in
	wantM.Entities[0].ExecutionUnit, wantM.Entities[0].LevelInExecution, wantM.Entities[0].SequenceInLevel = 1, 1, 1
	if diff := cmp.Diff(p.Manifest, wantM); diff != "" {
		t.Errorf("manifest: got -, want +:\n%s", diff)
	}
	b, err := p.File("LINES.CSV")
	if err != nil {
		t.Fatal(err)
	}
	tab, err := ReadTable(p.Manifest.Entities[0], b)
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{{Line: 2, Values: []string{"J1", "RM-2000"}}, {Line: 3, Values: []string{"J1", `with "quote", comma`}}}
	if diff := cmp.Diff(tab.Rows, want); diff != "" {
		t.Errorf("rows: got -, want +:\n%s", diff)
	}
}

func TestReadErrors(t *testing.T) {
	good := buildPackage(t, csvManifest(), nil)
	utf8Manifest := `<?xml version="1.0" encoding="utf-8"?>` + csvManifest().XML()
	wrongNS := strings.Replace(csvManifest().XML(), Namespace, "http://example.com/wrong", 1)
	zipWith := func(files map[string]string) []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for n, c := range files {
			w, _ := zw.Create(n)
			_, _ = w.Write([]byte(c))
		}
		_ = zw.Close()
		return buf.Bytes()
	}
	hdr := Header{}.XML()
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"good", good, nil},
		{"utf8 manifest with declaration", zipWith(map[string]string{ManifestFile: utf8Manifest, HeaderFile: hdr}), nil},
		{"not a zip", []byte("hello"), ErrNotZip},
		{"no manifest", zipWith(map[string]string{HeaderFile: hdr}), ErrMissingFile},
		{"no header", zipWith(map[string]string{ManifestFile: utf8Manifest}), ErrMissingFile},
		{"wrong namespace", zipWith(map[string]string{ManifestFile: wrongNS, HeaderFile: hdr}), ErrManifest},
		{"wrong root", zipWith(map[string]string{ManifestFile: hdr, HeaderFile: hdr}), ErrManifest},
		{"broken xml", zipWith(map[string]string{ManifestFile: "<DataManagementPackageManifest", HeaderFile: hdr}), ErrManifest},
		{"latin1 bytes", zipWith(map[string]string{ManifestFile: "\xff\x00<", HeaderFile: hdr}), ErrManifest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(tt.data, Options{})
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReadFileTooLarge(t *testing.T) {
	big := bytes.Repeat([]byte("a"), 4096)
	p, err := Read(buildPackage(t, csvManifest(), map[string][]byte{"lines.csv": big}), Options{MaxFileBytes: 2048})
	if !errors.Is(err, ErrTooLarge) {
		// The manifest itself fits, so Read succeeds and File fails.
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.File("lines.csv"); !errors.Is(err, ErrTooLarge) {
			t.Errorf("got %v, want ErrTooLarge", err)
		}
	}
}

func TestReadCSVUnicode(t *testing.T) {
	crlf := "A,B\r\n1,2\r\n"
	tests := []struct {
		name     string
		data     []byte
		wantRows int
		want     error
	}{
		{"utf16 crlf", EncodeUTF16LE(crlf), 1, nil},
		{"quoted newline", EncodeUTF16LE("A,B\r\n\"x\ny\",2\r\n"), 1, nil},
		{"no trailing newline", EncodeUTF16LE("A,B\r\n1,2"), 1, nil},
		{"utf8", []byte(crlf), 0, ErrNotUnicode},
		{"utf8 bom", append([]byte{0xEF, 0xBB, 0xBF}, crlf...), 0, ErrNotUnicode},
		{"lf only", EncodeUTF16LE("A,B\n1,2\n"), 0, ErrLineEnding},
		{"cr only", EncodeUTF16LE("A,B\r1,2\r"), 0, ErrLineEnding},
		{"odd length", append(EncodeUTF16LE(crlf), 0), 0, ErrNotUnicode},
		{"bad quote", EncodeUTF16LE("A,B\r\n\"x,2\r\n"), 0, ErrFormat},
		{"empty", EncodeUTF16LE(""), 0, ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, err := ReadCSVUnicode(tt.data)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if err == nil && len(tab.Rows) != tt.wantRows {
				t.Errorf("rows = %d, want %d", len(tab.Rows), tt.wantRows)
			}
		})
	}
}

func TestReadTableUnsupportedFormat(t *testing.T) {
	_, err := ReadTable(Entity{SourceFormat: "XML-Attribute"}, []byte("<a/>"))
	if !errors.Is(err, ErrUnsupportedFormat) {
		t.Errorf("got %v, want ErrUnsupportedFormat", err)
	}
}

// FuzzReadPackage checks that no package, however broken, makes the reader
// panic or read past its limits. Seeds: f.Add below, the F&O reference
// package, and testdata/fuzz/FuzzReadPackage.
func FuzzReadPackage(f *testing.F) {
	csv := WriteCSVUnicode([]string{"JOURNALNUMBER", "ITEMNUMBER"}, [][]string{{"J1", "RM-2000"}})
	f.Add(buildPackage(f, csvManifest(), map[string][]byte{"lines.csv": csv}))
	f.Add(buildPackage(f, csvManifest(), map[string][]byte{"lines.csv": []byte("JOURNALNUMBER\nJ1\n")}))
	f.Add(referencePackage(f))
	f.Add([]byte("PK\x03\x04"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Read(data, Options{MaxFileBytes: 1 << 20})
		if err != nil {
			return
		}
		for _, e := range p.Manifest.Entities {
			b, err := p.File(e.InputFilePath)
			if err != nil {
				continue
			}
			if len(b) > 1<<20 {
				t.Fatalf("File returned %d bytes past the limit", len(b))
			}
			_, _ = ReadTable(e, b)
		}
	})
}
