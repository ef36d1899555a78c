package dmfpackage

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/plantgate/plantgate/internal/foemu/dmfpkg"
)

func TestValidate(t *testing.T) {
	ok := func() Spec {
		return Spec{DefinitionGroup: "DG", Entities: []Entity{{Label: "Lines", Columns: []string{"A", "B"}}}}
	}
	with := func(f func(*Spec)) Spec { s := ok(); f(&s); return s }
	tests := []struct {
		name string
		spec Spec
		want []string // problems; nil = valid
	}{
		{"valid", ok(), nil},
		{"valid csv with fields and target", with(func(s *Spec) {
			s.Entities[0].Format = FormatCSV
			s.Entities[0].TargetEntity = "ProdJournalBOMEntity"
			s.Entities[0].Fields = map[string]string{"A": "FIELD_A"}
		}), nil},
		{"empty", Spec{}, []string{"definition group is empty", "no entities"}},
		{"description with newline", with(func(s *Spec) { s.Description = "a\nb" }), []string{"description holds control character U+000A"}},
		{"compression level", with(func(s *Spec) { s.CompressionLevel = 10 }), []string{"compression level 10 is not 0 (default) or 1 to 9"}},
		{"negative compression level", with(func(s *Spec) { s.CompressionLevel = -1 }), []string{"compression level -1 is not 0 (default) or 1 to 9"}},
		{"format", with(func(s *Spec) { s.Entities[0].Format = "csv-unicode" }), []string{`entity 1 "Lines": format "csv-unicode" is not "CSV-Unicode" or "CSV"`}},
		{"excel", with(func(s *Spec) { s.Entities[0].Format = "EXCEL" }), []string{`entity 1 "Lines": format "EXCEL" is not "CSV-Unicode" or "CSV"`}},
		{"empty label", with(func(s *Spec) { s.Entities[0].Label = "" }), []string{`entity 1 "": label is empty`}},
		{"label space", with(func(s *Spec) { s.Entities[0].Label = "Lines " }), []string{`entity 1 "Lines ": label has leading or trailing white space`}},
		{"label bad utf-8", with(func(s *Spec) { s.Entities[0].Label = "L\xff" }), []string{`entity 1 "L\xff": label is not valid UTF-8`, `entity 1 "L\xff": file "L\xff.csv" is not valid UTF-8`}},
		{"duplicate label", with(func(s *Spec) {
			s.Entities = append(s.Entities, Entity{Label: "lines", File: "other.csv", Columns: []string{"A"}})
		}), []string{`entity 2 "lines": label also used by entity 1`}},
		{"no columns", with(func(s *Spec) { s.Entities[0].Columns = nil }), []string{`entity 1 "Lines": no columns`}},
		{"empty column", with(func(s *Spec) { s.Entities[0].Columns = []string{"A", ""} }), []string{`entity 1 "Lines": column 2 "" is empty`}},
		{"column with comma", with(func(s *Spec) { s.Entities[0].Columns = []string{"A,B"} }), []string{`entity 1 "Lines": column 1 "A,B": a column name cannot hold a comma or a double quote`}},
		{"column with quote", with(func(s *Spec) { s.Entities[0].Columns = []string{`A"`} }), []string{`entity 1 "Lines": column 1 "A\"": a column name cannot hold a comma or a double quote`}},
		{"column with CR", with(func(s *Spec) { s.Entities[0].Columns = []string{"A\rB"} }), []string{`entity 1 "Lines": column 1 "A\rB" holds control character U+000D`}},
		{"duplicate column", with(func(s *Spec) { s.Entities[0].Columns = []string{"A", "B", "a"} }), []string{`entity 1 "Lines": column 3 "a": duplicate column (column 1 is "A")`}},
		{"field map unknown key", with(func(s *Spec) { s.Entities[0].Fields = map[string]string{"C": "X", "a": "Y"} }), []string{
			`entity 1 "Lines": field map key "C" is not a column`, `entity 1 "Lines": field map key "a" is not a column`,
		}},
		{"field map empty field", with(func(s *Spec) { s.Entities[0].Fields = map[string]string{"A": ""} }), []string{`entity 1 "Lines": column 1 "A": field is empty`}},
		{"field map duplicate field", with(func(s *Spec) { s.Entities[0].Fields = map[string]string{"A": "b"} }), []string{`entity 1 "Lines": column 2 "B": field "B" also mapped from column 1 "A"`}},
		{"file with slash", with(func(s *Spec) { s.Entities[0].File = "dir/lines.csv" }), []string{`entity 1 "Lines": file "dir/lines.csv": a file name cannot hold '/' or '\' (the package is a flat zip)`}},
		{"file reserved", with(func(s *Spec) { s.Entities[0].File = "manifest.XML" }), []string{`entity 1 "Lines": file "manifest.XML": reserved for the package's own XML`}},
		{"duplicate file", with(func(s *Spec) {
			s.Entities = append(s.Entities, Entity{Label: "Other", File: "LINES.CSV", Columns: []string{"A"}})
		}), []string{`entity 2 "Other": file "LINES.CSV": also the file of entity 1 (names match without regard to case)`}},
		{"label with slash gets a flat default file", with(func(s *Spec) { s.Entities[0].Label = "Lines/V2" }), nil},
		{"target entity control", with(func(s *Spec) { s.Entities[0].TargetEntity = "X\tY" }), []string{`entity 1 "Lines": target entity holds control character U+0009`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			var se *SpecError
			if !errors.As(err, &se) || !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("got %v, want a *SpecError", err)
			}
			if diff := cmp.Diff(se.Problems, tt.want); diff != "" {
				t.Errorf("problems: got -, want +:\n%s", diff)
			}
		})
	}
}

func TestSpecErrorMessage(t *testing.T) {
	err := Spec{}.Validate()
	if got, want := err.Error(), "invalid DMF package spec: definition group is empty; no entities"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestDefaultFile(t *testing.T) {
	r, err := resolve(Spec{DefinitionGroup: "DG", Entities: []Entity{{Label: `Lines/V2\x`, Columns: []string{"A"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.entities[0].File; got != "Lines_V2_x.csv" {
		t.Errorf("file = %q", got)
	}
}

// customerTemplate is a manifest as a customer's German environment would
// export it: another label, another file name, an EntityMapList in another
// order than the columns.
func customerTemplate(utf16 bool) []byte {
	m := dmfpkg.Manifest{DefinitionGroupName: "Kommissionierliste", Entities: []dmfpkg.Entity{{
		EntityName: "Produktionsauftrag-Kommissionierlisten-Erfassungsposten", SourceFormat: FormatCSVUnicode,
		InputFilePath: "Kommissionierliste.csv", HasEntityMapList: true,
		EntityMapList: dmfpkg.MapColumns("ITEMNUMBER", "JOURNALNUMBER"),
	}}}
	if utf16 {
		return dmfpkg.EncodeUTF16LE(m.XML())
	}
	return []byte(`<?xml version="1.0" encoding="utf-8"?>` + m.XML())
}

func TestManifestTemplate(t *testing.T) {
	base := func(tmpl []byte) Spec {
		return Spec{DefinitionGroup: "Kommissionierliste", ManifestTemplate: tmpl, Entities: []Entity{{
			Label: "Production order picking list journal lines", File: "Kommissionierliste.csv",
			Columns: []string{"JOURNALNUMBER", "ITEMNUMBER"},
		}}}
	}
	with := func(tmpl []byte, f func(*Spec)) Spec { s := base(tmpl); f(&s); return s }
	const where = `manifest template: entity 1 "Production order picking list journal lines"`
	tests := []struct {
		name string
		spec Spec
		want []string
	}{
		{"utf-16 by file", base(customerTemplate(true)), nil},
		{"utf-8 by file", base(customerTemplate(false)), nil},
		{"by entity name supplies the file", with(customerTemplate(true), func(s *Spec) {
			s.Entities[0].Label = "Produktionsauftrag-Kommissionierlisten-Erfassungsposten"
			s.Entities[0].File = ""
		}), nil},
		{"by entity name with another file", with(customerTemplate(true), func(s *Spec) {
			s.Entities[0].Label = "Produktionsauftrag-Kommissionierlisten-Erfassungsposten"
			s.Entities[0].File = "lines.csv"
		}), []string{`manifest template: entity 1 "Produktionsauftrag-Kommissionierlisten-Erfassungsposten": file "lines.csv", but the template's entity "Produktionsauftrag-Kommissionierlisten-Erfassungsposten" reads "Kommissionierliste.csv"`}},
		{"not in template", with(customerTemplate(true), func(s *Spec) { s.Entities[0].File = "lines.csv" }), []string{
			where + ` (file "lines.csv") is not in the template (its entities: "Produktionsauftrag-Kommissionierlisten-Erfassungsposten" (file "Kommissionierliste.csv"))`,
			`manifest template: entity "Produktionsauftrag-Kommissionierlisten-Erfassungsposten" (file "Kommissionierliste.csv") is not in the spec; F&O would fail to find its file`,
		}},
		{"column not mapped", with(customerTemplate(true), func(s *Spec) { s.Entities[0].Columns = []string{"JOURNALNUMBER", "ITEMNUMBER", "QTY"} }), []string{
			where + `: column "QTY" has no EntityMap in the template (its XMLFields: "ITEMNUMBER", "JOURNALNUMBER")`,
		}},
		{"map field not a column", with(customerTemplate(true), func(s *Spec) { s.Entities[0].Columns = []string{"JOURNALNUMBER"} }), []string{
			where + `: the template maps XMLField "ITEMNUMBER", which is not a column (columns: "JOURNALNUMBER")`,
		}},
		{"column case differs", with(customerTemplate(true), func(s *Spec) { s.Entities[0].Columns = []string{"JournalNumber", "ITEMNUMBER"} }), []string{
			where + `: column "JournalNumber" has no EntityMap in the template (its XMLFields: "ITEMNUMBER", "JOURNALNUMBER")`,
			where + `: the template maps XMLField "JOURNALNUMBER", which is not a column (columns: "JournalNumber", "ITEMNUMBER")`,
		}},
		{"format differs", with(customerTemplate(true), func(s *Spec) { s.Entities[0].Format = FormatCSV }), []string{
			where + `: format "CSV", but the template's entity "Produktionsauftrag-Kommissionierlisten-Erfassungsposten" has SourceFormat "CSV-Unicode"`,
		}},
		{"no entity map list", base(bytes.Replace(customerTemplate(false),
			[]byte(customerTemplate(false)[bytes.Index(customerTemplate(false), []byte("<EntityMapList>")):bytes.Index(customerTemplate(false), []byte("</EntityMapList>"))+len("</EntityMapList>")]), nil, 1)),
			[]string{where + `: the template's entity "Produktionsauftrag-Kommissionierlisten-Erfassungsposten" has no EntityMapList (F&O would import 0 rows)`}},
		{"wrong namespace", base(bytes.Replace(customerTemplate(false), []byte(Namespace), []byte("urn:wrong"), 1)), []string{
			"manifest template: root element is {urn:wrong}DataManagementPackageManifest, want {" + Namespace + "}DataManagementPackageManifest",
		}},
		{"a header, not a manifest", base(PackageHeaderXML(Spec{DefinitionGroup: "X"})), []string{
			"manifest template: root element is {" + Namespace + "}DataManagementPackageHeader, want {" + Namespace + "}DataManagementPackageManifest",
		}},
		{"not xml", base([]byte("hello")), []string{"manifest template: parse XML: EOF"}},
		{"latin-1", base([]byte("<a>\xe9</a>")), []string{"manifest template: neither UTF-16 with a byte order mark nor valid UTF-8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate()
			var got []string
			var se *SpecError
			if errors.As(err, &se) {
				got = se.Problems
			} else if err != nil {
				t.Fatalf("got %v, want a *SpecError", err)
			}
			// "not in template" also leaves the spec's entity unmatched;
			// compare only the template problems.
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("problems: got -, want +:\n%s", diff)
			}
		})
	}
}

// TestManifestTemplateWrittenAsGiven builds with a template and reads the
// package back: the template's bytes are the Manifest.xml, and the data file
// carries the template's name.
func TestManifestTemplateWrittenAsGiven(t *testing.T) {
	tmpl := customerTemplate(true)
	spec := Spec{DefinitionGroup: "Kommissionierliste", ManifestTemplate: tmpl, Entities: []Entity{{
		Label: "Produktionsauftrag-Kommissionierlisten-Erfassungsposten", Columns: []string{"JOURNALNUMBER", "ITEMNUMBER"},
	}}}
	zipBytes, _ := build(t, spec, []testRow{{0, map[string]any{"JOURNALNUMBER": "J1", "ITEMNUMBER": "Ü-1"}}})
	p, err := dmfpkg.Read(zipBytes, dmfpkg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := p.File("Manifest.xml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m, tmpl) || !bytes.Equal(ManifestXML(spec), tmpl) {
		t.Error("Manifest.xml is not the template as given")
	}
	data, err := p.File("Kommissionierliste.csv")
	if err != nil {
		t.Fatal(err)
	}
	tab, err := dmfpkg.ReadTable(p.Manifest.Entities[0], data)
	if err != nil {
		t.Fatal(err)
	}
	if got := tab.Rows[0].Values; strings.Join(got, "|") != "J1|Ü-1" {
		t.Errorf("row = %q", got)
	}
}
