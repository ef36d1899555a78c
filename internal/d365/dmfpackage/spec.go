package dmfpackage

import (
	"bytes"
	"compress/flate"
	"encoding/xml"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Source data formats (the manifest's SourceFormat, the name of a data
// source under Data management > Data sources in F&O).
const (
	// FormatCSVUnicode is F&O's standard "CSV-Unicode" source: UTF-16 LE
	// with a byte order mark, comma separated, '"' text qualifier, CRLF.
	// The default, and the format F&O itself exports.
	FormatCSVUnicode = "CSV-Unicode"
	// FormatCSV is a comma separated source in UTF-8: the data file is
	// UTF-8 with a byte order mark and CRLF line ends. The customer's "CSV"
	// data source must use code page 65001 (UTF-8); see the package doc.
	FormatCSV = "CSV"
)

// DefaultCompressionLevel is the flate level used when
// Spec.CompressionLevel is 0: BestSpeed, which deflates CSV-Unicode text
// several times faster than the default level for a slightly larger zip
// (see bench_test.go).
const DefaultCompressionLevel = flate.BestSpeed

// Entity is one data file of a package and its manifest entry.
type Entity struct {
	// Label is the DMF entity label, the manifest's EntityName, e.g.
	// "Production order picking list journal lines". It is language- and
	// environment-specific; see Spec.ManifestTemplate.
	Label string
	// TargetEntity is the optional AOT entity name (TargetEntity element);
	// the element is omitted when empty.
	TargetEntity string
	// File is the data file's name inside the zip (InputFilePath). Empty
	// means Label + ".csv", with '/' and '\' replaced by '_'; with a
	// manifest template that names the entity, the template's InputFilePath.
	File string
	// Format is FormatCSVUnicode (the default when empty) or FormatCSV.
	Format string
	// Columns is the data file's header row, in order: the EntityMap
	// XMLFields.
	Columns []string
	// Fields optionally maps a column to its EntityField (staging field);
	// a column not in it maps to its upper-cased name.
	Fields map[string]string
}

// Spec describes a package: its data project and its entities.
type Spec struct {
	// DefinitionGroup is the data project (DefinitionGroupName).
	DefinitionGroup string
	// Description is the manifest's and header's Description; empty means
	// DefinitionGroup.
	Description string
	// Entities holds one data file each, in import order: all in
	// ExecutionUnit 1, entity i in LevelInExecutionUnit i+1 (levels run one
	// after the other), SequenceInLevel 1.
	Entities []Entity
	// ManifestTemplate, if set, is a Manifest.xml exported from the
	// customer's own data project (UTF-16 with a byte order mark, or UTF-8),
	// written into the zip as given instead of the generated one. Each of
	// Entities must appear in it, by InputFilePath or else by EntityName,
	// with the same SourceFormat and with EntityMap XMLFields that are
	// exactly the entity's columns (in any order); and it must list no
	// entity that Entities lacks.
	ManifestTemplate []byte
	// CompressionLevel is the flate level of the data files, 1
	// (flate.BestSpeed) to 9 (flate.BestCompression); 0 means
	// DefaultCompressionLevel.
	CompressionLevel int
}

// Columns returns a copy of e's columns: the header row of its data file and
// the keys Builder.Add expects.
func Columns(e Entity) []string { return append([]string(nil), e.Columns...) }

// Validate checks the spec: names, duplicate columns, fields and files,
// formats, compression level and the manifest template. It returns a
// *SpecError listing every problem, or nil. New calls it.
func (s Spec) Validate() error {
	_, err := resolve(s)
	return err
}

// entity is an Entity with defaults applied.
type entity struct {
	Entity
	fields []string // EntityField per column
}

// resolved is a Spec with defaults applied.
type resolved struct {
	Spec
	entities []entity
}

const (
	manifestFile = "Manifest.xml"
	headerFile   = "PackageHeader.xml"
)

// resolve applies the defaults of s and checks it.
func resolve(s Spec) (resolved, error) {
	var p problems
	r := resolved{Spec: s}
	if r.Description == "" {
		r.Description = r.DefinitionGroup
	}
	p.name("definition group", s.DefinitionGroup, true)
	if s.Description != "" {
		p.name("description", s.Description, false)
	}
	if s.CompressionLevel < 0 || s.CompressionLevel > flate.BestCompression {
		p.add("compression level %d is not 0 (default) or 1 to 9", s.CompressionLevel)
	}
	if len(s.Entities) == 0 {
		p.add("no entities")
	}
	var tmpl *template
	if len(s.ManifestTemplate) > 0 {
		t, err := parseTemplate(s.ManifestTemplate)
		if err != nil {
			p.add("manifest template: %v", err)
		}
		tmpl = t
	}
	labels := map[string]int{}
	files := map[string]int{}
	used := map[int]bool{} // template entries matched
	for i, e := range s.Entities {
		where := fmt.Sprintf("entity %d %q", i+1, e.Label)
		ent := entity{Entity: e}
		if e.Format == "" {
			ent.Format = FormatCSVUnicode
		}
		if ent.Format != FormatCSVUnicode && ent.Format != FormatCSV {
			p.add("%s: format %q is not %q or %q", where, e.Format, FormatCSVUnicode, FormatCSV)
		}
		p.name(where+": label", e.Label, true)
		if j, dup := labels[strings.ToLower(e.Label)]; dup && e.Label != "" {
			p.add("%s: label also used by entity %d", where, j+1)
		} else {
			labels[strings.ToLower(e.Label)] = i
		}
		if e.TargetEntity != "" {
			p.name(where+": target entity", e.TargetEntity, false)
		}
		// Columns and fields.
		if len(e.Columns) == 0 {
			p.add("%s: no columns", where)
		}
		cols := map[string]int{}
		fieldSeen := map[string]int{}
		for j, c := range e.Columns {
			cw := fmt.Sprintf("%s: column %d %q", where, j+1, c)
			if p.name(cw, c, true) && strings.ContainsAny(c, `,"`) {
				p.add("%s: a column name cannot hold a comma or a double quote", cw)
			}
			if k, dup := cols[strings.ToLower(c)]; dup {
				p.add("%s: duplicate column (column %d is %q)", cw, k+1, e.Columns[k])
				continue
			}
			cols[strings.ToLower(c)] = j
			f, ok := e.Fields[c]
			if !ok {
				f = strings.ToUpper(c)
			} else if !p.name(cw+": field", f, true) {
				f = strings.ToUpper(c)
			}
			ent.fields = append(ent.fields, f)
			if k, dup := fieldSeen[strings.ToLower(f)]; dup {
				p.add("%s: field %q also mapped from column %d %q", cw, f, k+1, e.Columns[k])
			} else {
				fieldSeen[strings.ToLower(f)] = j
			}
		}
		for _, k := range sortedKeys(e.Fields) {
			if !contains(e.Columns, k) {
				p.add("%s: field map key %q is not a column", where, k)
			}
		}
		// Template match, which may supply the file name.
		if tmpl != nil {
			k := tmpl.find(e.File, ent.Label)
			switch {
			case k < 0:
				p.add("manifest template: %s (file %q) is not in the template (its entities: %s)", where, fileOrDefault(e), tmpl.list())
			case used[k]:
				p.add("manifest template: %s matches template entity %q again", where, tmpl.entities[k].EntityName)
			default:
				used[k] = true
				te := tmpl.entities[k]
				if e.File == "" {
					ent.File = te.InputFilePath
				} else if !strings.EqualFold(e.File, te.InputFilePath) {
					p.add("manifest template: %s: file %q, but the template's entity %q reads %q", where, e.File, te.EntityName, te.InputFilePath)
				}
				if !strings.EqualFold(te.SourceFormat, ent.Format) {
					p.add("manifest template: %s: format %q, but the template's entity %q has SourceFormat %q", where, ent.Format, te.EntityName, te.SourceFormat)
				}
				p.checkMap(where, te, e.Columns)
			}
		}
		if ent.File == "" {
			ent.File = defaultFile(e.Label)
		}
		fw := fmt.Sprintf("%s: file %q", where, ent.File)
		if p.name(fw, ent.File, true) {
			switch {
			case strings.ContainsAny(ent.File, `/\`):
				p.add("%s: a file name cannot hold '/' or '\\' (the package is a flat zip)", fw)
			case ent.File == "." || ent.File == "..":
				p.add("%s: not a file name", fw)
			case strings.EqualFold(ent.File, manifestFile) || strings.EqualFold(ent.File, headerFile):
				p.add("%s: reserved for the package's own XML", fw)
			}
		}
		if j, dup := files[strings.ToLower(ent.File)]; dup {
			p.add("%s: also the file of entity %d (names match without regard to case)", fw, j+1)
		} else {
			files[strings.ToLower(ent.File)] = i
		}
		r.entities = append(r.entities, ent)
	}
	if tmpl != nil {
		for k, te := range tmpl.entities {
			if !used[k] {
				p.add("manifest template: entity %q (file %q) is not in the spec; F&O would fail to find its file", te.EntityName, te.InputFilePath)
			}
		}
	}
	if len(p) > 0 {
		return r, &SpecError{Problems: p}
	}
	return r, nil
}

func fileOrDefault(e Entity) string {
	if e.File != "" {
		return e.File
	}
	return defaultFile(e.Label)
}

func defaultFile(label string) string {
	return strings.NewReplacer("/", "_", `\`, "_").Replace(label) + ".csv"
}

type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// name checks a name that goes into the XML, a header row or a zip entry:
// valid UTF-8, no control characters, no leading or trailing white space
// (F&O and the reader trim it), and non-empty when required. It reports
// whether the name passed.
func (p *problems) name(what, s string, required bool) bool {
	switch {
	case s == "":
		if required {
			p.add("%s is empty", what)
			return false
		}
		return true
	case !utf8.ValidString(s):
		p.add("%s is not valid UTF-8", what)
	case strings.TrimSpace(s) != s:
		p.add("%s has leading or trailing white space", what)
	case strings.IndexFunc(s, badXMLRune) >= 0:
		p.add("%s holds control character %U", what, firstBad(s))
	default:
		return true
	}
	return false
}

func firstBad(s string) rune {
	for _, r := range s {
		if badXMLRune(r) {
			return r
		}
	}
	return 0
}

// badXMLRune reports runes not allowed in names: C0 and C1 controls, DEL and
// the non-characters XML 1.0 forbids.
func badXMLRune(r rune) bool {
	return r < 0x20 || (r >= 0x7F && r <= 0x9F) || r == 0xFFFE || r == 0xFFFF
}

func (p *problems) checkMap(where string, te templateEntity, columns []string) {
	if !te.HasMap {
		p.add("manifest template: %s: the template's entity %q has no EntityMapList (F&O would import 0 rows)", where, te.EntityName)
		return
	}
	have := map[string]bool{}
	for _, f := range te.XMLFields {
		if have[f] {
			p.add("manifest template: %s: XMLField %q appears twice in the template's EntityMapList", where, f)
		}
		have[f] = true
	}
	want := map[string]bool{}
	for _, c := range columns {
		want[c] = true
		if !have[c] {
			p.add("manifest template: %s: column %q has no EntityMap in the template (its XMLFields: %s)", where, c, quoteList(te.XMLFields))
		}
	}
	for _, f := range te.XMLFields {
		if !want[f] {
			p.add("manifest template: %s: the template maps XMLField %q, which is not a column (columns: %s)", where, f, quoteList(columns))
		}
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// template is what the validation needs of a Manifest.xml template.
type template struct {
	entities []templateEntity
}

type templateEntity struct {
	EntityName    string
	InputFilePath string
	SourceFormat  string
	HasMap        bool
	XMLFields     []string
}

// find returns the entry whose InputFilePath is file (without regard to
// case, as F&O and the reader match zip names), else the one whose
// EntityName is label, else -1.
func (t *template) find(file, label string) int {
	if file != "" {
		for k, e := range t.entities {
			if strings.EqualFold(e.InputFilePath, file) {
				return k
			}
		}
	}
	for k, e := range t.entities {
		if e.EntityName == label {
			return k
		}
	}
	if file == "" {
		def := defaultFile(label)
		for k, e := range t.entities {
			if strings.EqualFold(e.InputFilePath, def) {
				return k
			}
		}
	}
	return -1
}

func (t *template) list() string {
	if len(t.entities) == 0 {
		return "none"
	}
	s := make([]string, len(t.entities))
	for i, e := range t.entities {
		s[i] = fmt.Sprintf("%q (file %q)", e.EntityName, e.InputFilePath)
	}
	return strings.Join(s, ", ")
}

type xmlTemplate struct {
	XMLName  xml.Name
	Entities []struct {
		EntityName    string `xml:"EntityName"`
		InputFilePath string `xml:"InputFilePath"`
		SourceFormat  string `xml:"SourceFormat"`
		EntityMapList *struct {
			Maps []struct {
				XMLField string `xml:"XMLField"`
			} `xml:"EntityMap"`
		} `xml:"EntityMapList"`
	} `xml:"PackageEntityList>DataManagementPackageEntityData"`
}

// parseTemplate reads a Manifest.xml in UTF-16 (with a byte order mark, or
// detected from its first '<') or UTF-8.
func parseTemplate(b []byte) (*template, error) {
	text, err := decodeText(b)
	if err != nil {
		return nil, err
	}
	dec := xml.NewDecoder(strings.NewReader(text))
	dec.CharsetReader = func(charset string, r io.Reader) (io.Reader, error) {
		switch strings.ToLower(charset) {
		case "utf-16", "utf-16le", "utf-16be", "unicode", "utf-8", "us-ascii":
			return r, nil // already UTF-8
		}
		return nil, fmt.Errorf("unsupported encoding %q", charset)
	}
	var x xmlTemplate
	if err := dec.Decode(&x); err != nil {
		return nil, fmt.Errorf("parse XML: %w", err)
	}
	if x.XMLName.Local != "DataManagementPackageManifest" || x.XMLName.Space != Namespace {
		return nil, fmt.Errorf("root element is {%s}%s, want {%s}DataManagementPackageManifest", x.XMLName.Space, x.XMLName.Local, Namespace)
	}
	t := &template{}
	for _, e := range x.Entities {
		te := templateEntity{
			EntityName:    strings.TrimSpace(e.EntityName),
			InputFilePath: strings.TrimSpace(e.InputFilePath),
			SourceFormat:  strings.TrimSpace(e.SourceFormat),
			HasMap:        e.EntityMapList != nil,
		}
		if e.EntityMapList != nil {
			for _, m := range e.EntityMapList.Maps {
				te.XMLFields = append(te.XMLFields, strings.TrimSpace(m.XMLField))
			}
		}
		t.entities = append(t.entities, te)
	}
	if len(t.entities) == 0 {
		return nil, fmt.Errorf("no DataManagementPackageEntityData in PackageEntityList")
	}
	return t, nil
}

// decodeText returns b as UTF-8: UTF-16 LE or BE by byte order mark or by a
// first '<', UTF-8 with or without a byte order mark.
func decodeText(b []byte) (string, error) {
	switch {
	case len(b) >= 2 && b[0] == 0xFF && b[1] == 0xFE:
		return decodeUTF16(b[2:], false)
	case len(b) >= 2 && b[0] == 0xFE && b[1] == 0xFF:
		return decodeUTF16(b[2:], true)
	case len(b) >= 2 && b[0] == '<' && b[1] == 0:
		return decodeUTF16(b, false)
	case len(b) >= 2 && b[0] == 0 && b[1] == '<':
		return decodeUTF16(b, true)
	}
	b = bytes.TrimPrefix(b, []byte{0xEF, 0xBB, 0xBF})
	if !utf8.Valid(b) {
		return "", fmt.Errorf("neither UTF-16 with a byte order mark nor valid UTF-8")
	}
	return string(b), nil
}

func decodeUTF16(b []byte, bigEndian bool) (string, error) {
	if len(b)%2 != 0 {
		return "", fmt.Errorf("UTF-16 text has an odd number of bytes")
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		if bigEndian {
			u[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
		} else {
			u[i] = uint16(b[2*i]) | uint16(b[2*i+1])<<8
		}
	}
	return string(utf16.Decode(u)), nil
}
