package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/plantgate/plantgate/internal/app"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/plugins/outputs/fodmf"
)

// dmfUsage is the dmf part of usage; plantgate dmf --help prints it.
const dmfUsage = `  plantgate dmf SUBCOMMAND -c FILE --sink NAME   a fo.dmf sink's data package, offline:
      columns [--json]                            each entity's data file and its columns, in order
      build --in FILE.jsonl --out PACKAGE.zip     the package the sink would send, to import by hand
    --in holds one JSON object per line (- for stdin): one record's fields, as
    the flow's map makes them. A line that is not JSON, or a record with a
    missing or unknown column, fails with its line number and the expected
    columns, and no package is written. Secrets are not resolved; F&O is not
    called.
`

// dmfSubcommands are the subcommands of plantgate dmf, in usage order.
var dmfSubcommands = []string{"columns", "build"}

// dmfStdin is what --in - reads; tests replace it.
var dmfStdin io.Reader = os.Stdin

// dmfSubHelp is the help of one dmf subcommand.
func dmfSubHelp(sub string) string {
	var b strings.Builder
	switch sub {
	case "columns":
		b.WriteString(`Usage:
  plantgate dmf columns -c FILE --sink NAME [--json]

Prints each entity of the fo.dmf sink: its label, the data file's name and
source format, and its columns in order; the line_field column is filled by
plantgate. A record's fields (what the flow's map produces) are exactly the
other columns; in a sink with several entities each record also names its
entity in entity_field (default _entity). --json prints a JSON array.
`)
	case "build":
		b.WriteString(`Usage:
  plantgate dmf build -c FILE --sink NAME --in FILE.jsonl --out PACKAGE.zip

Builds, offline, exactly the DMF data package the fo.dmf sink would send
(Manifest.xml, PackageHeader.xml and one data file per entity), to load by
hand in F&O's Data management workspace (Import, into the sink's data
project). FILE.jsonl holds one JSON object per line (- reads stdin): one
record's fields, as the flow's map makes them; numbers keep their text
("1.50" stays 1.50). Blank lines are skipped.

A line that is not a JSON object, or a record with a missing or unknown
column, fails with its line number and the expected columns (exit 1), and no
package is written. The package is written to a temporary file next to
--out and renamed on success, replacing an existing file.
`)
	}
	return b.String()
}

func cmdDMF(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "Usage:\n"+dmfUsage)
		return exitUsage
	}
	sub := args[0]
	switch {
	case sub == "-h" || sub == "--help" || sub == "help":
		fmt.Fprint(stdout, "Usage:\n"+dmfUsage)
		return exitOK
	case !slices.Contains(dmfSubcommands, sub):
		fmt.Fprintf(stderr, "plantgate dmf: unknown subcommand %q (subcommands: %s)\n\nUsage:\n%s", sub, strings.Join(dmfSubcommands, ", "), dmfUsage)
		return exitUsage
	}
	fs, cfgPath := newFlags("dmf "+sub, stderr)
	sinkName := fs.String("sink", "", "the fo.dmf sink (a key of the sinks: section)")
	var asJSON *bool
	var in, out *string
	if sub == "columns" {
		asJSON = fs.Bool("json", false, "print a JSON array")
	} else {
		in = fs.String("in", "", "JSON lines, one record's fields per line; - for stdin")
		out = fs.String("out", "", "the package (.zip) to write")
	}
	if code, ok := parseFlags(fs, args[1:], dmfSubHelp(sub), stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "plantgate dmf %s: unexpected argument %q (flags go before it)\nRun 'plantgate dmf %s --help' for its flags.\n", sub, fs.Arg(0), sub)
		return exitUsage
	}
	if sub == "build" && (*in == "" || *out == "") {
		fmt.Fprintln(stderr, "plantgate dmf build: --in FILE.jsonl and --out PACKAGE.zip are required")
		return exitUsage
	}
	// The layout needs only the sink's settings: the secrets stay
	// unresolved, so this works where only the service can read them.
	copts := app.ConfigOptions()
	copts.SkipSecrets = true
	cfg, err := config.Load(*cfgPath, copts)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	sc, code := dmfSink(cfg, *sinkName, sub, stderr)
	if sc == nil {
		return code
	}
	lay, err := fodmf.NewLayout(sc)
	if err != nil {
		fmt.Fprintf(stderr, "plantgate dmf %s: sink %s: %v\n", sub, *sinkName, err)
		return exitConfig
	}
	if sub == "columns" {
		return dmfColumns(lay, sc, *sinkName, *asJSON, stdout, stderr)
	}
	legal := sc.LegalEntity
	if env := cfg.FO[sc.Env]; legal == "" && env != nil {
		legal = env.Company
	}
	return dmfBuild(lay, sc, *sinkName, legal, *in, *out, stdout, stderr)
}

// dmfSink returns the settings of the fo.dmf sink name, or nil and the exit
// code after naming the config's fo.dmf sinks.
func dmfSink(cfg *config.Config, name, sub string, stderr io.Writer) (*fodmf.Config, int) {
	var names []string
	for n, p := range cfg.Sinks {
		if p.Type == fodmf.Type {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	list := "the config has no fo.dmf sink"
	if len(names) > 0 {
		list = "fo.dmf sinks: " + strings.Join(names, ", ")
	}
	p := cfg.Sinks[name]
	switch {
	case name == "":
		fmt.Fprintf(stderr, "plantgate dmf %s: --sink is required (%s)\n", sub, list)
		return nil, exitUsage
	case p == nil:
		fmt.Fprintf(stderr, "plantgate dmf %s: no sink %q in the config (%s)\n", sub, name, list)
		return nil, exitUsage
	case p.Type != fodmf.Type:
		fmt.Fprintf(stderr, "plantgate dmf %s: sink %q is of type %s, not fo.dmf (%s)\n", sub, name, p.Type, list)
		return nil, exitUsage
	}
	sc, ok := p.Settings.(*fodmf.Config)
	if !ok {
		fmt.Fprintf(stderr, "plantgate dmf %s: sink %q has no fo.dmf settings\n", sub, name)
		return nil, exitConfig
	}
	return sc, exitOK
}

// dmfEntity is one entity as plantgate dmf columns --json prints it.
type dmfEntity struct {
	Name         string   `json:"name"`
	TargetEntity string   `json:"target_entity,omitempty"`
	File         string   `json:"file"`
	SourceFormat string   `json:"source_format"`
	Columns      []string `json:"columns"`
	LineField    string   `json:"line_field,omitempty"`
	// EntityField is the record field naming the entity, set in a sink
	// with several entities.
	EntityField string `json:"entity_field,omitempty"`
}

// dmfEntities returns the layout's entities with the file names and
// formats the package really uses (defaults and the manifest template
// applied): those of an empty package built from it.
func dmfEntities(lay *fodmf.Layout, sc *fodmf.Config) ([]dmfEntity, error) {
	st, err := lay.Build(io.Discard, os.TempDir(), nil)
	if err != nil {
		return nil, err
	}
	ents := lay.Columns()
	out := make([]dmfEntity, len(ents))
	for i, e := range ents {
		d := dmfEntity{Name: e.Name, TargetEntity: e.TargetEntity, File: e.File, SourceFormat: e.SourceFormat,
			Columns: append([]string{}, e.Columns...), LineField: e.LineField}
		if i < len(st.Entities) {
			d.File = st.Entities[i].File
		}
		if d.SourceFormat == "" {
			d.SourceFormat = "CSV-Unicode"
		}
		if len(ents) > 1 {
			d.EntityField = sc.EntityField
		}
		out[i] = d
	}
	return out, nil
}

func dmfColumns(lay *fodmf.Layout, sc *fodmf.Config, sink string, asJSON bool, stdout, stderr io.Writer) int {
	ents, err := dmfEntities(lay, sc)
	if err != nil {
		fmt.Fprintf(stderr, "plantgate dmf columns: sink %s: %v\n", sink, err)
		return exitFailure
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(ents)
		return exitOK
	}
	plural := "entity"
	if len(ents) > 1 {
		plural = "entities"
	}
	fmt.Fprintf(stdout, "sink %s: data project %s, %d %s\n", sink, sc.DefinitionGroup, len(ents), plural)
	for i, e := range ents {
		fmt.Fprintf(stdout, "\n%d. %s\n", i+1, e.Name)
		if e.TargetEntity != "" {
			fmt.Fprintf(stdout, "   target entity: %s\n", e.TargetEntity)
		}
		fmt.Fprintf(stdout, "   file:          %s\n", e.File)
		fmt.Fprintf(stdout, "   source format: %s\n", e.SourceFormat)
		fmt.Fprintf(stdout, "   columns:\n")
		width := 0
		for _, c := range e.Columns {
			width = max(width, len(c))
		}
		for j, c := range e.Columns {
			if c == e.LineField {
				fmt.Fprintf(stdout, "   %3d  %-*s  filled by plantgate (line_field: the line's number)\n", j+1, width, c)
			} else {
				fmt.Fprintf(stdout, "   %3d  %s\n", j+1, c)
			}
		}
	}
	fmt.Fprintln(stdout)
	if len(ents) > 1 {
		fmt.Fprintf(stdout, "Each record names its entity in %s, one of:\n", sc.EntityField)
		for _, e := range ents {
			fmt.Fprintf(stdout, "  %s\n", e.Name)
		}
		fmt.Fprintln(stdout, "Its other fields are exactly that entity's columns; plantgate fills the line_field column.")
	} else if ents[0].LineField != "" {
		fmt.Fprintf(stdout, "Each record's fields are exactly these columns; plantgate fills %s.\n", ents[0].LineField)
	} else {
		fmt.Fprintln(stdout, "Each record's fields are exactly these columns.")
	}
	return exitOK
}

// dmfRecords reads JSON lines: one record's fields per line. It returns the
// records and each one's line number.
func dmfRecords(r io.Reader, name string) ([]pipeline.Record, []int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var recs []pipeline.Record
	var lines []int
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, nil, fmt.Errorf("%s: read: %w", name, err)
		}
		if n == 1 {
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark
		}
		if text := bytes.TrimSpace(line); len(text) > 0 {
			fields, perr := dmfParseLine(text)
			if perr != nil {
				return nil, nil, fmt.Errorf("%s line %d: %w", name, n, perr)
			}
			recs = append(recs, pipeline.Record{Seq: uint64(len(recs) + 1), Fields: fields})
			lines = append(lines, n)
		}
		if errors.Is(err, io.EOF) {
			return recs, lines, nil
		}
	}
}

// dmfParseLine decodes one JSON object, numbers as json.Number so that a
// decimal keeps its text.
func dmfParseLine(text []byte) (map[string]any, error) {
	if text[0] != '{' {
		return nil, errors.New("not a JSON object: want one record's fields per line, like {\"COLUMN\": \"value\"}")
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	var fields map[string]any
	if err := dec.Decode(&fields); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("not JSON: more after the object (one object per line)")
	}
	return fields, nil
}

func dmfBuild(lay *fodmf.Layout, sc *fodmf.Config, sink, legal, inPath, outPath string, stdout, stderr io.Writer) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "plantgate dmf build: "+format+"\n", args...)
		return exitFailure
	}
	var in io.Reader
	name := inPath
	if inPath == "-" {
		in, name = dmfStdin, "stdin"
	} else {
		f, err := os.Open(inPath) //nolint:gosec // the operator names the input file
		if err != nil {
			return fail("%v", err)
		}
		defer func() { _ = f.Close() }()
		in = f
	}
	recs, lines, err := dmfRecords(in, name)
	if err != nil {
		return fail("%v; no package written", err)
	}
	if len(recs) == 0 {
		return fail("%s holds no records (want one JSON object per line): no package built", name)
	}
	spool, err := os.MkdirTemp("", "plantgate-dmf-")
	if err != nil {
		return fail("%v", err)
	}
	defer func() { _ = os.RemoveAll(spool) }()
	dir, base := filepath.Split(outPath)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return fail("%v", err)
	}
	done := false
	defer func() {
		if !done {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name()) //nolint:gosec // our own temp file beside --out
		}
	}()
	st, err := lay.Build(tmp, spool, recs)
	if err != nil {
		return fail("%s; no package written", dmfRecordError(err, name, lines))
	}
	if err := tmp.Sync(); err != nil {
		return fail("write %s: %v", outPath, err)
	}
	if err := tmp.Close(); err != nil {
		return fail("write %s: %v", outPath, err)
	}
	if err := os.Rename(tmp.Name(), outPath); err != nil { //nolint:gosec // the operator names the output file
		return fail("%v", err)
	}
	done = true
	where := "data project " + sc.DefinitionGroup
	if legal != "" {
		where += ", company " + legal
	}
	rows := "rows"
	if st.Rows == 1 {
		rows = "row"
	}
	fmt.Fprintf(stdout, "%s: the package of sink %s (%s): %d %s, %d bytes\n", outPath, sink, where, st.Rows, rows, st.ZipBytes)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  ENTITY\tFILE\tROWS\tBYTES")
	for _, e := range st.Entities {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\n", e.Label, e.File, e.Rows, e.UncompressedBytes)
	}
	_ = tw.Flush()
	return exitOK
}

// dmfRecordError turns Layout.Build's "record N: ..." into the record's
// line of the input.
func dmfRecordError(err error, name string, lines []int) string {
	var n int
	if inner := errors.Unwrap(err); inner != nil {
		if _, serr := fmt.Sscanf(err.Error(), "record %d:", &n); serr == nil && n >= 1 && n <= len(lines) {
			return fmt.Sprintf("%s line %d: %v", name, lines[n-1], inner)
		}
	}
	return err.Error()
}
