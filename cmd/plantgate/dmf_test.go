package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/foemu/dmfpkg"
)

const pickingEntity = "Production order picking list journal lines"

// dmfConfig has a single-entity fo.dmf sink, a two-entity one and a
// recorder sink. Its client secret names an unset variable: the dmf
// commands do not resolve secrets.
const dmfConfig = `gateway: {id: t, data_dir: DIR/data}
fo:
  prod:
    url: https://contoso.operations.dynamics.com
    tenant_id: 00000000-0000-0000-0000-0000000000aa
    client_id: plantgate
    client_secret: ${env:UNSET_SECRET_FOR_TEST}
    company: USMF
sources: {mes: {type: file, path: DIR/in.jsonl}}
flows:
  pick:
    from: mes
    to: [dmf-picking, dmf-count, archive]
    map:
      PRODUCTIONORDERNUMBER: payload.order
      ITEMNUMBER: payload.item
      CONSUMPTIONBOMQUANTITY: payload.qty
sinks:
  dmf-picking:
    type: fo.dmf
    env: prod
    definition_group: MES-PickingList
    entity: Production order picking list journal lines
    columns: [JOURNALLINENUMBER, PRODUCTIONORDERNUMBER, ITEMNUMBER, CONSUMPTIONBOMQUANTITY]
    line_field: JOURNALLINENUMBER
  dmf-count:
    type: fo.dmf
    env: prod
    definition_group: MES-Counting
    legal_entity: DEMF
    entities:
      - name: Counting journal headers
        columns: [JOURNALNUMBER, DESCRIPTION]
      - name: Counting journal lines
        file: lines.csv
        columns: [JOURNALNUMBER, LINENUMBER, ITEMNUMBER, COUNTEDQUANTITY]
        line_field: LINENUMBER
  archive: {type: recorder, path: DIR/archive.jsonl}
`

// writeDMFConfig writes dmfConfig into a new temporary directory and
// returns the directory and the config's path.
func writeDMFConfig(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "plantgate.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(dmfConfig, "DIR", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// noFiles fails if dir holds anything but the names given.
func noFiles(t *testing.T, dir string, keep ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !contains(keep, e.Name()) {
			t.Errorf("%s left behind in %s", e.Name(), dir)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestDMFColumnsText(t *testing.T) {
	_, cfg := writeDMFConfig(t)
	code, out, errOut := runCLI("dmf", "columns", "-c", cfg, "--sink", "dmf-picking")
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	want := `sink dmf-picking: data project MES-PickingList, 1 entity

1. Production order picking list journal lines
   file:          Production order picking list journal lines.csv
   source format: CSV-Unicode
   columns:
     1  JOURNALLINENUMBER       filled by plantgate (line_field: the line's number)
     2  PRODUCTIONORDERNUMBER
     3  ITEMNUMBER
     4  CONSUMPTIONBOMQUANTITY

Each record's fields are exactly these columns; plantgate fills JOURNALLINENUMBER.
`
	if out != want {
		t.Errorf("columns:\n%s\nwant:\n%s", out, want)
	}

	code, out, errOut = runCLI("dmf", "columns", "-c", cfg, "--sink", "dmf-count")
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, s := range []string{"data project MES-Counting, 2 entities", "1. Counting journal headers",
		"Counting journal headers.csv", "2. Counting journal lines", "file:          lines.csv",
		"  2  LINENUMBER       filled by plantgate", "names its entity in _entity, one of:\n  Counting journal headers\n  Counting journal lines\n"} {
		if !strings.Contains(out, s) {
			t.Errorf("two-entity columns lack %q:\n%s", s, out)
		}
	}
}

func TestDMFColumnsJSON(t *testing.T) {
	_, cfg := writeDMFConfig(t)
	code, out, errOut := runCLI("dmf", "columns", "-c", cfg, "--sink", "dmf-count", "--json")
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	var got []dmfEntity
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := []dmfEntity{
		{Name: "Counting journal headers", File: "Counting journal headers.csv", SourceFormat: "CSV-Unicode",
			Columns: []string{"JOURNALNUMBER", "DESCRIPTION"}, EntityField: "_entity"},
		{Name: "Counting journal lines", File: "lines.csv", SourceFormat: "CSV-Unicode",
			Columns: []string{"JOURNALNUMBER", "LINENUMBER", "ITEMNUMBER", "COUNTEDQUANTITY"}, LineField: "LINENUMBER", EntityField: "_entity"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("columns --json = %+v\nwant %+v", got, want)
	}
	if !strings.Contains(out, `"source_format": "CSV-Unicode"`) || !strings.Contains(out, `"line_field": "LINENUMBER"`) {
		t.Errorf("snake_case keys missing:\n%s", out)
	}
	// A single-entity sink has no entity_field.
	_, out, _ = runCLI("dmf", "columns", "-c", cfg, "--sink", "dmf-picking", "--json")
	if strings.Contains(out, "entity_field") || !strings.HasPrefix(out, "[") {
		t.Errorf("single entity --json:\n%s", out)
	}
}

// readPackage reads the package at path and returns its data file of
// entity label as rows of cells, the header first.
func readPackage(t *testing.T, path, label string) (*dmfpkg.Package, [][]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := dmfpkg.Read(b, dmfpkg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range p.Manifest.Entities {
		if e.EntityName != label {
			continue
		}
		data, err := p.File(e.InputFilePath)
		if err != nil {
			t.Fatal(err)
		}
		tab, err := dmfpkg.ReadTable(e, data)
		if err != nil {
			t.Fatal(err)
		}
		rows := [][]string{tab.Header}
		for _, r := range tab.Rows {
			rows = append(rows, r.Values)
		}
		return p, rows
	}
	t.Fatalf("%s: no entity %q in the manifest (%+v)", path, label, p.Manifest.Entities)
	return nil, nil
}

func TestDMFBuildRoundTrip(t *testing.T) {
	dir, cfg := writeDMFConfig(t)
	in := filepath.Join(dir, "lines.jsonl")
	writeFile(t, in, "\ufeff"+`{"PRODUCTIONORDERNUMBER":"P-1","ITEMNUMBER":"M-100, \"steel\" 2mm","CONSUMPTIONBOMQUANTITY":1.50}`+"\r\n"+
		"\n"+
		`{"PRODUCTIONORDERNUMBER":"P-2","ITEMNUMBER":"two\nlines 🌱","CONSUMPTIONBOMQUANTITY":0.000100}`+"\n"+
		`{"PRODUCTIONORDERNUMBER":"P-3","ITEMNUMBER":"","CONSUMPTIONBOMQUANTITY":12}`)
	out := filepath.Join(dir, "picking.zip")
	code, stdout, errOut := runCLI("dmf", "build", "-c", cfg, "--sink", "dmf-picking", "--in", in, "--out", out)
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, stdout, errOut)
	}
	for _, s := range []string{out + ": the package of sink dmf-picking (data project MES-PickingList, company USMF): 3 rows",
		pickingEntity + ".csv", "ROWS"} {
		if !strings.Contains(stdout, s) {
			t.Errorf("summary lacks %q:\n%s", s, stdout)
		}
	}
	p, rows := readPackage(t, out, pickingEntity)
	if p.Manifest.DefinitionGroupName != "MES-PickingList" {
		t.Errorf("definition group %q", p.Manifest.DefinitionGroupName)
	}
	want := [][]string{
		{"JOURNALLINENUMBER", "PRODUCTIONORDERNUMBER", "ITEMNUMBER", "CONSUMPTIONBOMQUANTITY"},
		{"1", "P-1", `M-100, "steel" 2mm`, "1.50"},
		{"2", "P-2", "two\nlines 🌱", "0.000100"},
		{"3", "P-3", "", "12"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("rows:\n%q\nwant\n%q", rows, want)
	}
	noFiles(t, dir, "plantgate.yaml", "lines.jsonl", "picking.zip")

	// Two entities from stdin: each record names its entity.
	dmfStdin = strings.NewReader(`{"_entity":"Counting journal headers","JOURNALNUMBER":"C-1","DESCRIPTION":"shift, late"}
{"_entity":"Counting journal lines","JOURNALNUMBER":"C-1","ITEMNUMBER":"A","COUNTEDQUANTITY":3}
{"_entity":"counting journal lines","JOURNALNUMBER":"C-1","ITEMNUMBER":"B","COUNTEDQUANTITY":4.25}
`)
	t.Cleanup(func() { dmfStdin = os.Stdin })
	out2 := filepath.Join(dir, "count.zip")
	if code, stdout, errOut = runCLI("dmf", "build", "-c", cfg, "--sink", "dmf-count", "--in", "-", "--out", out2); code != exitOK {
		t.Fatalf("stdin: exit %d\n%s%s", code, stdout, errOut)
	}
	if !strings.Contains(stdout, "company DEMF): 3 rows") {
		t.Errorf("summary:\n%s", stdout)
	}
	_, heads := readPackage(t, out2, "Counting journal headers")
	_, lines := readPackage(t, out2, "Counting journal lines")
	if want := [][]string{{"JOURNALNUMBER", "DESCRIPTION"}, {"C-1", "shift, late"}}; !reflect.DeepEqual(heads, want) {
		t.Errorf("headers %q, want %q", heads, want)
	}
	if want := [][]string{{"JOURNALNUMBER", "LINENUMBER", "ITEMNUMBER", "COUNTEDQUANTITY"}, {"C-1", "1", "A", "3"}, {"C-1", "2", "B", "4.25"}}; !reflect.DeepEqual(lines, want) {
		t.Errorf("lines %q, want %q", lines, want)
	}
}

func TestDMFBuildRejects(t *testing.T) {
	dir, cfg := writeDMFConfig(t)
	out := filepath.Join(dir, "out.zip")
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"unknown column", `{"PRODUCTIONORDERNUMBER":"P-1","ITEMNUMBER":"A","CONSUMPTIONBOMQUANTITY":1}` + "\n\n" +
			`{"PRODUCTIONORDERNUMBER":"P-2","ITEM":"A","CONSUMPTIONBOMQUANTITY":1}` + "\n",
			[]string{"line 3:", "missing column ITEMNUMBER", "unknown column ITEM ",
				"JOURNALLINENUMBER, PRODUCTIONORDERNUMBER, ITEMNUMBER, CONSUMPTIONBOMQUANTITY", "no package written"}},
		{"not JSON", `{"PRODUCTIONORDERNUMBER":"P-1","ITEMNUMBER":"A","CONSUMPTIONBOMQUANTITY":1}` + "\n" + `{"PRODUCTIONORDERNUMBER":` + "\n",
			[]string{"line 2:", "not JSON", "no package written"}},
		{"not an object", `["P-1"]`, []string{"line 1:", "not a JSON object"}},
		{"two objects", `{"a":1} {"b":2}`, []string{"line 1:", "one object per line"}},
		{"nested value", `{"PRODUCTIONORDERNUMBER":{"x":1},"ITEMNUMBER":"A","CONSUMPTIONBOMQUANTITY":1}`, []string{"line 1:", "PRODUCTIONORDERNUMBER"}},
		{"empty", "\n  \n", []string{"holds no records", "no package built"}},
	} {
		in := filepath.Join(dir, "in.jsonl")
		writeFile(t, in, tc.in)
		code, stdout, errOut := runCLI("dmf", "build", "-c", cfg, "--sink", "dmf-picking", "--in", in, "--out", out)
		if code != exitFailure {
			t.Errorf("%s: exit %d, want 1\n%s%s", tc.name, code, stdout, errOut)
		}
		for _, s := range tc.want {
			if !strings.Contains(errOut, s) {
				t.Errorf("%s: stderr lacks %q:\n%s", tc.name, s, errOut)
			}
		}
		noFiles(t, dir, "plantgate.yaml", "in.jsonl")
	}

	// A failed build leaves an existing package as it was.
	writeFile(t, out, "old")
	writeFile(t, filepath.Join(dir, "in.jsonl"), `{"PRODUCTIONORDERNUMBER":"P-1"}`)
	if code, _, errOut := runCLI("dmf", "build", "-c", cfg, "--sink", "dmf-picking", "--in", filepath.Join(dir, "in.jsonl"), "--out", out); code != exitFailure ||
		!strings.Contains(errOut, "missing column ITEMNUMBER, CONSUMPTIONBOMQUANTITY") {
		t.Errorf("exit %d: %s", code, errOut)
	}
	if b, _ := os.ReadFile(out); string(b) != "old" {
		t.Errorf("the existing package became %q", b)
	}
	noFiles(t, dir, "plantgate.yaml", "in.jsonl", "out.zip")

	// A record of a two-entity sink without its entity.
	writeFile(t, filepath.Join(dir, "in.jsonl"), `{"JOURNALNUMBER":"C-1","DESCRIPTION":"x"}`)
	if code, _, errOut := runCLI("dmf", "build", "-c", cfg, "--sink", "dmf-count", "--in", filepath.Join(dir, "in.jsonl"), "--out", out); code != exitFailure ||
		!strings.Contains(errOut, "line 1:") || !strings.Contains(errOut, "_entity") || !strings.Contains(errOut, "Counting journal lines") {
		t.Errorf("no _entity: exit %d: %s", code, errOut)
	}
}

func TestDMFNotADMFSink(t *testing.T) {
	_, cfg := writeDMFConfig(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dmf", "columns", "-c", cfg, "--sink", "archive"}, `sink "archive" is of type recorder, not fo.dmf (fo.dmf sinks: dmf-count, dmf-picking)`},
		{[]string{"dmf", "build", "-c", cfg, "--sink", "nope", "--in", "x", "--out", "y"}, `no sink "nope" in the config (fo.dmf sinks: dmf-count, dmf-picking)`},
		{[]string{"dmf", "columns", "-c", cfg}, "--sink is required (fo.dmf sinks: dmf-count, dmf-picking)"},
		{[]string{"dmf", "build", "-c", cfg, "--sink", "dmf-picking"}, "--in FILE.jsonl and --out PACKAGE.zip are required"},
		{[]string{"dmf", "columns", "-c", cfg, "--sink", "dmf-picking", "extra"}, `unexpected argument "extra"`},
		{[]string{"dmf", "frobnicate"}, `unknown subcommand "frobnicate" (subcommands: columns, build)`},
		{[]string{"dmf"}, "plantgate dmf SUBCOMMAND"},
	} {
		code, out, errOut := runCLI(tc.args...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, want 2 with %q\nstdout: %s\nstderr: %s", tc.args[1:], code, tc.want, out, errOut)
		}
	}
	// A config problem is exit 78.
	if code, _, errOut := runCLI("dmf", "columns", "-c", filepath.Join(t.TempDir(), "missing.yaml"), "--sink", "x"); code != exitConfig {
		t.Errorf("missing config: exit %d: %s", code, errOut)
	}
}

func TestDMFHelpWithoutConfig(t *testing.T) {
	for _, args := range [][]string{
		{"dmf", "--help"}, {"dmf", "help"},
		{"dmf", "columns", "--help"}, {"dmf", "build", "-h"},
		{"dmf", "build", "-c", "/nonexistent/plantgate.yaml", "--help"},
	} {
		code, out, errOut := runCLI(args...)
		if code != exitOK || !strings.Contains(out, "Usage") || errOut != "" {
			t.Errorf("%v: exit %d, want 0 with usage on stdout\nstdout: %s\nstderr: %s", args, code, out, errOut)
		}
	}
	_, out, _ := runCLI("dmf", "build", "--help")
	for _, s := range []string{"--in", "--out", "--sink", "Data management"} {
		if !strings.Contains(out, s) {
			t.Errorf("build --help lacks %q:\n%s", s, out)
		}
	}
	if _, out, _ := runCLI("--help"); !strings.Contains(out, "plantgate dmf SUBCOMMAND") {
		t.Errorf("plantgate --help lacks the dmf commands:\n%s", out)
	}
}
