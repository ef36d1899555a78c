package foemu

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/plantgate/plantgate/internal/foemu/odata"
)

//go:embed defaults/entities.yaml
var defaultEntitiesYAML []byte

// FieldType is the type of an entity field.
type FieldType string

// Field types. Dates and date-times travel as Edm.DateTimeOffset in JSON, as
// in F&O: a date reads back as 2025-03-03T12:00:00Z.
const (
	TypeString   FieldType = "string"
	TypeInt      FieldType = "int"
	TypeDecimal  FieldType = "decimal"
	TypeDate     FieldType = "date"
	TypeDateTime FieldType = "datetime"
	TypeEnum     FieldType = "enum"
	TypeBool     FieldType = "bool"
)

// dataAreaID is the company field of company-specific entities.
const dataAreaID = "dataAreaId"

// emptyDate and emptyDateTime are what F&O returns for unset dates.
const (
	emptyDate     = "1900-01-01T12:00:00Z"
	emptyDateTime = "1900-01-01T00:00:00Z"
)

// Field describes one field of an entity.
type Field struct {
	// Name is the OData property name, e.g. ProductionOrderNumber.
	Name string `yaml:"name" json:"name"`
	// Type is the field type.
	Type FieldType `yaml:"type" json:"type"`
	// Max is the maximum length of a string field; 0 means unlimited.
	Max int `yaml:"max,omitempty" json:"max,omitempty"`
	// Enum names the enum of an enum field.
	Enum string `yaml:"enum,omitempty" json:"enum,omitempty"`
	// Mandatory fields must be non-empty on write.
	Mandatory bool `yaml:"mandatory,omitempty" json:"mandatory,omitempty"`
	// Staging is the DMF staging column (EntityField in a manifest); empty
	// means Name in upper case.
	Staging string `yaml:"staging,omitempty" json:"staging,omitempty"`
	// NumberSequence, if set, fills an empty field on create from a
	// per-company counter: each '#' is a digit, e.g. "PPL-######".
	NumberSequence string `yaml:"number_sequence,omitempty" json:"number_sequence,omitempty"`
	// LineNumber, if set, fills an empty numeric field on create with the
	// next line number within the group named by this field (usually the
	// journal number).
	LineNumber string `yaml:"line_number,omitempty" json:"line_number,omitempty"`
}

// StagingName returns the DMF staging column of the field.
func (f *Field) StagingName() string {
	if f.Staging != "" {
		return f.Staging
	}
	return strings.ToUpper(f.Name)
}

// Entity describes an entity: its OData entity set, keys and fields, and
// how DMF names it.
type Entity struct {
	// Set is the case-sensitive entity set name, e.g. ProductionOrderHeaders.
	Set string `yaml:"set" json:"set"`
	// Type is the entity type name, e.g. ProductionOrderHeader.
	Type string `yaml:"type" json:"type"`
	// Target is the AOT entity name used in infolog texts and accepted as a
	// manifest's TargetEntity, e.g. ProdProductionOrderHeaderEntity.
	Target string `yaml:"target" json:"target"`
	// Labels are the DMF entity names (language-specific labels) a
	// manifest's EntityName may use.
	Labels []string `yaml:"labels" json:"labels"`
	// Keys are the key fields in declared order; company-specific entities
	// start with dataAreaId.
	Keys []string `yaml:"keys" json:"keys"`
	// Fields are the entity's fields other than dataAreaId.
	Fields []Field `yaml:"fields" json:"fields"`

	byName    map[string]*Field
	byStaging map[string]*Field
	all       []*Field // dataAreaId first for company entities
	company   bool
}

// Company reports whether the entity is company specific (has dataAreaId).
func (e *Entity) Company() bool { return e.company }

// FieldByName returns a field by its exact name.
func (e *Entity) FieldByName(name string) (*Field, bool) {
	f, ok := e.byName[name]
	return f, ok
}

// qualifiedType is the OData type name used in messages.
func (e *Entity) qualifiedType() string { return "Microsoft.Dynamics.DataEntities." + e.Type }

// Schema is the set of entities and enums the emulator serves.
type Schema struct {
	// Enums maps an enum name to its members in value order.
	Enums map[string][]string `yaml:"enums" json:"enums"`
	// Entities lists the entities.
	Entities []*Entity `yaml:"entities" json:"entities"`

	bySet    map[string]*Entity
	byLabel  map[string]*Entity
	byTarget map[string]*Entity
}

// LoadSchema parses a schema YAML document (see defaults/entities.yaml for
// the format). file names it in error messages.
func LoadSchema(file string, data []byte) (*Schema, error) {
	var s Schema
	doc, err := decodeYAML(file, data, &s)
	if err != nil {
		return nil, err
	}
	if err := s.index(doc); err != nil {
		return nil, err
	}
	return &s, nil
}

// DefaultSchema returns the built-in schema.
func DefaultSchema() *Schema {
	s, err := LoadSchema("defaults/entities.yaml", defaultEntitiesYAML)
	if err != nil {
		panic(err) // the embedded file is covered by tests
	}
	return s
}

// merge adds or replaces (by entity set) the entities and enums of o.
func (s *Schema) merge(o *Schema) {
	for n, m := range o.Enums {
		s.Enums[n] = m
	}
	for _, e := range o.Entities {
		replaced := false
		for i, old := range s.Entities {
			if old.Set == e.Set {
				s.Entities[i] = e
				replaced = true
			}
		}
		if !replaced {
			s.Entities = append(s.Entities, e)
		}
	}
}

// index validates the schema and builds its lookup maps. doc may be nil
// for a merged schema.
func (s *Schema) index(doc *yamlDoc) error {
	if s.Enums == nil {
		s.Enums = map[string][]string{}
	}
	s.bySet = map[string]*Entity{}
	s.byLabel = map[string]*Entity{}
	s.byTarget = map[string]*Entity{}
	for n, members := range s.Enums {
		if len(members) == 0 {
			return doc.errorf(p("enums", n), "enum %s has no members", n)
		}
	}
	for i, e := range s.Entities {
		at := func(elems ...any) []string { return p(append([]any{"entities", i}, elems...)...) }
		if e.Set == "" {
			return doc.errorf(at(), "entity without a set name")
		}
		if _, dup := s.bySet[e.Set]; dup {
			return doc.errorf(at("set"), "entity set %s defined twice", e.Set)
		}
		if e.Type == "" {
			e.Type = strings.TrimSuffix(e.Set, "s")
		}
		if e.Target == "" {
			e.Target = e.Type + "Entity"
		}
		e.byName = map[string]*Field{}
		e.byStaging = map[string]*Field{}
		e.all = nil
		e.company = false
		for _, k := range e.Keys {
			if k == dataAreaID {
				e.company = true
			}
		}
		if e.company {
			f := &Field{Name: dataAreaID, Type: TypeString, Max: 4, Staging: "DATAAREAID"}
			e.byName[dataAreaID] = f
			e.all = append(e.all, f)
		}
		for j := range e.Fields {
			f := &e.Fields[j]
			fat := at("fields", j)
			if f.Name == "" || f.Name == dataAreaID {
				return doc.errorf(fat, "field name missing or reserved")
			}
			if _, dup := e.byName[f.Name]; dup {
				return doc.errorf(fat, "field %s defined twice in %s", f.Name, e.Set)
			}
			switch f.Type {
			case TypeString, TypeInt, TypeDecimal, TypeDate, TypeDateTime, TypeBool:
			case TypeEnum:
				if _, ok := s.Enums[f.Enum]; !ok {
					return doc.errorf(fat, "field %s.%s uses unknown enum %q", e.Set, f.Name, f.Enum)
				}
			case "":
				f.Type = TypeString
			default:
				return doc.errorf(fat, "field %s.%s has unknown type %q (want string, int, decimal, date, datetime, enum or bool)", e.Set, f.Name, f.Type)
			}
			if f.NumberSequence != "" && (f.Type != TypeString || !strings.Contains(f.NumberSequence, "#")) {
				return doc.errorf(fat, "number_sequence of %s.%s needs a string field and a pattern with '#'", e.Set, f.Name)
			}
			if f.LineNumber != "" && f.Type != TypeInt && f.Type != TypeDecimal {
				return doc.errorf(fat, "line_number of %s.%s needs an int or decimal field", e.Set, f.Name)
			}
			e.byName[f.Name] = f
			e.all = append(e.all, f)
		}
		for _, f := range e.all {
			e.byStaging[strings.ToUpper(f.StagingName())] = f
		}
		for j := range e.Fields {
			if ln := e.Fields[j].LineNumber; ln != "" {
				if _, ok := e.byName[ln]; !ok {
					return doc.errorf(at("fields", j), "line_number of %s.%s names unknown field %s", e.Set, e.Fields[j].Name, ln)
				}
			}
		}
		if len(e.Keys) == 0 {
			return doc.errorf(at(), "entity %s has no keys", e.Set)
		}
		for j, k := range e.Keys {
			if _, ok := e.byName[k]; !ok {
				return doc.errorf(at("keys", j), "key %s of %s is not a field", k, e.Set)
			}
		}
		s.bySet[e.Set] = e
		for j, l := range e.Labels {
			key := strings.ToLower(strings.TrimSpace(l))
			if other, dup := s.byLabel[key]; dup && other != e {
				return doc.errorf(at("labels", j), "DMF label %q used by %s and %s", l, other.Set, e.Set)
			}
			s.byLabel[key] = e
		}
		s.byTarget[strings.ToLower(e.Target)] = e
	}
	return nil
}

// Entity returns the entity of a case-sensitive entity set name.
func (s *Schema) Entity(set string) (*Entity, bool) {
	e, ok := s.bySet[set]
	return e, ok
}

// entityByLabel finds the entity a DMF manifest names: by label (ignoring
// case), else by AOT target entity name.
func (s *Schema) entityByLabel(label, target string) (*Entity, bool) {
	if e, ok := s.byLabel[strings.ToLower(strings.TrimSpace(label))]; ok {
		return e, true
	}
	if target != "" {
		if e, ok := s.byTarget[strings.ToLower(strings.TrimSpace(target))]; ok {
			return e, true
		}
	}
	return nil, false
}

// sets returns the entity set names, sorted.
func (s *Schema) sets() []string {
	out := make([]string, 0, len(s.bySet))
	for n := range s.bySet {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// convError is a value that does not convert to its field's type. It is
// reported the way the OData layer of F&O reports a bad payload.
type convError struct {
	field *Field
	msg   string
}

// Error returns the OData-style message.
func (c *convError) Error() string { return c.msg }

// zero returns the value F&O reports for an unset field.
func (s *Schema) zero(f *Field) any {
	switch f.Type {
	case TypeInt:
		return int64(0)
	case TypeDecimal:
		return float64(0)
	case TypeDate:
		return emptyDate
	case TypeDateTime:
		return emptyDateTime
	case TypeEnum:
		return s.Enums[f.Enum][0]
	case TypeBool:
		return false
	}
	return ""
}

// isEmpty reports whether v counts as not filled in for a mandatory check.
func (s *Schema) isEmpty(f *Field, v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == "" || x == emptyDate || x == emptyDateTime
	case int64:
		return x == 0
	case float64:
		return x == 0
	}
	return false
}

// fromJSON converts a JSON value (decoded with UseNumber) for field f to
// its stored form.
func (s *Schema) fromJSON(f *Field, v any) (any, error) {
	bad := func(edm string) error {
		lit := fmt.Sprint(v)
		if b, err := json.Marshal(v); err == nil {
			lit = strings.Trim(string(b), `"`)
		}
		return &convError{field: f, msg: fmt.Sprintf("Cannot convert the literal '%s' to the expected type '%s'.", lit, edm)}
	}
	if v == nil {
		return s.zero(f), nil
	}
	switch f.Type {
	case TypeString:
		str, ok := v.(string)
		if !ok {
			return nil, bad("Edm.String")
		}
		return str, nil
	case TypeInt:
		n, ok := v.(json.Number)
		if !ok {
			return nil, bad("Edm.Int64")
		}
		i, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil {
			return nil, bad("Edm.Int64")
		}
		return i, nil
	case TypeDecimal:
		n, ok := v.(json.Number)
		if !ok {
			return nil, bad("Edm.Decimal")
		}
		x, err := n.Float64()
		if err != nil || math.IsInf(x, 0) || math.IsNaN(x) {
			return nil, bad("Edm.Decimal")
		}
		return x, nil
	case TypeDate, TypeDateTime:
		str, ok := v.(string)
		if !ok {
			return nil, bad("Edm.DateTimeOffset")
		}
		t, err := parseDateText(str)
		if err != nil {
			return nil, bad("Edm.DateTimeOffset")
		}
		return formatDate(f, t), nil
	case TypeEnum:
		str, ok := v.(string)
		if !ok {
			return nil, bad("Microsoft.Dynamics.DataEntities." + f.Enum)
		}
		m, ok := s.enumMember(f.Enum, str)
		if !ok {
			return nil, &convError{field: f, msg: fmt.Sprintf("Requested value '%s' was not found.", str)}
		}
		return m, nil
	case TypeBool:
		b, ok := v.(bool)
		if !ok {
			return nil, bad("Edm.Boolean")
		}
		return b, nil
	}
	return nil, bad("Edm.Untyped")
}

// fromText converts a DMF cell for field f. Excel date cells may hold serial
// day numbers.
func (s *Schema) fromText(f *Field, text string, excel bool) (any, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return s.zero(f), nil
	}
	bad := func() error {
		return fmt.Errorf("the value '%s' could not be converted to the type of field %s (%s)", text, f.StagingName(), f.Type)
	}
	switch f.Type {
	case TypeString:
		return text, nil
	case TypeInt:
		i, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			x, ferr := strconv.ParseFloat(text, 64)
			if ferr != nil || x != math.Trunc(x) || math.Abs(x) > 1<<53 {
				return nil, bad()
			}
			i = int64(x)
		}
		return i, nil
	case TypeDecimal:
		x, err := strconv.ParseFloat(text, 64)
		if err != nil || math.IsInf(x, 0) || math.IsNaN(x) {
			return nil, bad()
		}
		return x, nil
	case TypeDate, TypeDateTime:
		if excel {
			if serial, err := strconv.ParseFloat(text, 64); err == nil && serial > 0 && serial < 2958466 {
				t := time.Date(1899, 12, 30, 0, 0, 0, 0, time.UTC).Add(time.Duration(serial * 24 * float64(time.Hour)))
				return formatDate(f, t.Round(time.Second)), nil
			}
		}
		t, err := parseDateText(text)
		if err != nil {
			return nil, bad()
		}
		return formatDate(f, t), nil
	case TypeEnum:
		if m, ok := s.enumMember(f.Enum, text); ok {
			return m, nil
		}
		if i, err := strconv.Atoi(text); err == nil && i >= 0 && i < len(s.Enums[f.Enum]) {
			return s.Enums[f.Enum][i], nil
		}
		return nil, fmt.Errorf("the value '%s' is not valid for enum %s of field %s", text, f.Enum, f.StagingName())
	case TypeBool:
		switch strings.ToLower(text) {
		case "true", "1", "yes":
			return true, nil
		case "false", "0", "no":
			return false, nil
		}
		return nil, bad()
	}
	return nil, bad()
}

// enumMember finds a member by name, ignoring case.
func (s *Schema) enumMember(enum, name string) (string, bool) {
	name = strings.TrimSpace(name)
	for _, m := range s.Enums[enum] {
		if strings.EqualFold(m, name) {
			return m, true
		}
	}
	return "", false
}

var dateLayouts = []string{
	time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", time.DateOnly, "2006-01-02 15:04:05",
	"1/2/2006 15:04:05", "1/2/2006 3:04:05 PM", "1/2/2006",
}

// parseDateText accepts ISO dates and date-times and US-style dates, the
// forms F&O's default (en-us) data formats read.
func parseDateText(s string) (time.Time, error) {
	for _, l := range dateLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid date %q", s)
}

// formatDate renders a date the way F&O's OData does: date fields at noon
// UTC, date-times to the second.
func formatDate(f *Field, t time.Time) string {
	if f.Type == TypeDate {
		return time.Date(t.Year(), t.Month(), t.Day(), 12, 0, 0, 0, time.UTC).Format(time.RFC3339)
	}
	return t.UTC().Truncate(time.Second).Format(time.RFC3339)
}

// value converts a stored value to an odata.Value for $filter evaluation.
func (s *Schema) value(f *Field, v any) odata.Value {
	switch x := v.(type) {
	case nil:
		return odata.Null
	case string:
		switch f.Type {
		case TypeDate, TypeDateTime:
			t, err := time.Parse(time.RFC3339, x)
			if err != nil {
				return odata.Null
			}
			return odata.Time(t)
		case TypeEnum:
			return odata.Enum(x)
		}
		return odata.String(x)
	case int64:
		return odata.Number(float64(x))
	case float64:
		return odata.Number(x)
	case bool:
		return odata.Bool(x)
	}
	return odata.Null
}

// propertyType describes field f for odata.Filter.Bind.
func (s *Schema) propertyType(f *Field) odata.PropertyType {
	switch f.Type {
	case TypeInt:
		return odata.PropertyType{Kind: odata.KindNumber, Edm: "Edm.Int64"}
	case TypeDecimal:
		return odata.PropertyType{Kind: odata.KindNumber, Edm: "Edm.Decimal"}
	case TypeDate, TypeDateTime:
		return odata.PropertyType{Kind: odata.KindTime}
	case TypeEnum:
		return odata.PropertyType{Kind: odata.KindEnum, Edm: "Microsoft.Dynamics.DataEntities." + f.Enum, Members: s.Enums[f.Enum]}
	case TypeBool:
		return odata.PropertyType{Kind: odata.KindBool}
	}
	return odata.PropertyType{Kind: odata.KindString}
}

// keyValue converts a key predicate literal for field f to its stored form.
func (s *Schema) keyValue(f *Field, v odata.Value) (any, error) {
	switch v.Kind {
	case odata.KindString:
		switch f.Type {
		case TypeString:
			return v.Str, nil
		case TypeEnum:
			return s.fromJSON(f, v.Str)
		case TypeDate, TypeDateTime:
			return s.fromJSON(f, v.Str)
		}
	case odata.KindEnum:
		if f.Type == TypeEnum {
			return s.fromJSON(f, v.Str)
		}
	case odata.KindNumber:
		switch f.Type {
		case TypeInt:
			if v.Num == math.Trunc(v.Num) {
				return int64(v.Num), nil
			}
		case TypeDecimal:
			return v.Num, nil
		}
	case odata.KindTime:
		if f.Type == TypeDate || f.Type == TypeDateTime {
			return formatDate(f, v.Time), nil
		}
	case odata.KindBool:
		if f.Type == TypeBool {
			return v.Bool, nil
		}
	}
	return nil, &convError{field: f, msg: fmt.Sprintf("The key value %s is not valid for property '%s'.", odata.FormatLiteral(v), f.Name)}
}

// keyLiteral renders a stored key value for a URL key predicate.
func keyLiteral(f *Field, v any) string {
	switch x := v.(type) {
	case string:
		if f.Type == TypeDate || f.Type == TypeDateTime {
			return x
		}
		return "'" + strings.ReplaceAll(x, "'", "''") + "'"
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	return "null"
}

// coerce converts a Go value built by the emulator itself (float64, int64,
// string) to the stored form of field f.
func (s *Schema) coerce(f *Field, v any) any {
	switch f.Type {
	case TypeInt:
		switch x := v.(type) {
		case float64:
			return int64(x)
		case int:
			return int64(x)
		}
	case TypeDecimal:
		switch x := v.(type) {
		case int64:
			return float64(x)
		case int:
			return float64(x)
		}
	case TypeEnum:
		if str, ok := v.(string); ok {
			if m, ok := s.enumMember(f.Enum, str); ok {
				return m
			}
		}
	case TypeString:
		if _, ok := v.(string); !ok {
			return fmt.Sprint(v)
		}
	}
	return v
}
