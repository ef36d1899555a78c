package foemu

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// store holds the records of every entity set. The Emulator's mu guards it.
type store struct {
	schema    *Schema
	tables    map[string]*table
	companies []Company
	defaultCo string
	seqs      map[string]int64
	version   int64
}

type table struct {
	entity *Entity
	rows   map[string]*row
	sorted []*row // nil when rows changed since the last sort
	// used holds the values of number-sequence fields per company|field
	// (lower case), and lines the highest line number per line group.
	// Neither shrinks on delete: numbers are not reused.
	used  map[string]map[string]bool
	lines map[string]float64
}

type row struct {
	vals    map[string]any
	version int64
}

func newStore(schema *Schema, seed *Seed) (*store, error) {
	st := &store{
		schema:    schema,
		tables:    map[string]*table{},
		companies: append([]Company(nil), seed.Companies...),
		defaultCo: strings.ToLower(seed.DefaultCompany),
		seqs:      map[string]int64{},
	}
	for _, e := range schema.Entities {
		st.tables[e.Set] = &table{entity: e, rows: map[string]*row{}, used: map[string]map[string]bool{}, lines: map[string]float64{}}
	}
	sets := make([]string, 0, len(seed.Records))
	for s := range seed.Records {
		sets = append(sets, s)
	}
	sort.Strings(sets)
	for _, set := range sets {
		e, ok := schema.Entity(set)
		if !ok {
			return nil, fmt.Errorf("%w: seed: unknown entity set %s", ErrConfig, set)
		}
		for i, rec := range seed.Records[set] {
			vals, err := st.convertInput(e, jsonRecord(rec))
			if err != nil {
				return nil, fmt.Errorf("%w: seed: %s[%d]: %w", ErrConfig, set, i, err)
			}
			full, infolog := st.prepareCreate(e, vals, seed.DefaultCompany)
			if infolog != nil {
				return nil, fmt.Errorf("%w: seed: %s[%d]: %s", ErrConfig, set, i, strings.Join(infolog, "; "))
			}
			st.insert(e, full)
		}
	}
	return st, nil
}

// companyKnown reports whether a dataAreaId names a company.
func (st *store) companyKnown(id string) bool {
	for _, c := range st.companies {
		if strings.EqualFold(c.ID, id) {
			return true
		}
	}
	return false
}

// convertInput converts a JSON object (decoded with UseNumber) to stored
// values. Unknown properties and values of the wrong type are errors of the
// OData layer (convError or unknownPropertyError).
func (st *store) convertInput(e *Entity, in map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(in))
	for k, v := range in {
		if strings.HasPrefix(k, "@odata.") || strings.Contains(k, "@odata.") {
			continue
		}
		f, ok := e.byName[k]
		if !ok {
			return nil, &convError{msg: fmt.Sprintf("The property '%s' does not exist on type '%s'. Make sure to only use property names that are defined by the type or mark the type as open type.", k, e.qualifiedType())}
		}
		if _, nested := v.(map[string]any); nested {
			return nil, &convError{field: f, msg: fmt.Sprintf("An unexpected 'StartObject' node was found for property named '%s' when reading from the JSON reader. A 'PrimitiveValue' node was expected.", k)}
		}
		if _, nested := v.([]any); nested {
			return nil, &convError{field: f, msg: fmt.Sprintf("An unexpected 'StartArray' node was found for property named '%s' when reading from the JSON reader. A 'PrimitiveValue' node was expected.", k)}
		}
		cv, err := st.schema.fromJSON(f, v)
		if err != nil {
			return nil, err
		}
		if f.Name == dataAreaID {
			cv = strings.ToLower(cv.(string))
		}
		out[k] = cv
	}
	return out, nil
}

// prepareCreate completes a new record: company, defaults, number
// sequences and line numbers, then validates it. It returns the record, or
// the infolog lines of a failed write. It does not insert.
func (st *store) prepareCreate(e *Entity, vals map[string]any, company string) (map[string]any, []string) {
	rec := make(map[string]any, len(e.all))
	for _, f := range e.all {
		if v, ok := vals[f.Name]; ok {
			rec[f.Name] = v
		} else {
			rec[f.Name] = st.schema.zero(f)
		}
	}
	if e.company {
		if co, _ := rec[dataAreaID].(string); co == "" {
			if company == "" {
				company = st.defaultCo
			}
			rec[dataAreaID] = strings.ToLower(company)
		}
	}
	co, _ := rec[dataAreaID].(string)
	for _, f := range e.all {
		if f.NumberSequence != "" && rec[f.Name] == "" {
			rec[f.Name] = st.nextNumber(e, co, f)
		}
	}
	for _, f := range e.all {
		if f.LineNumber != "" && st.schema.isEmpty(f, rec[f.Name]) {
			rec[f.Name] = st.nextLine(e, co, f, rec[f.LineNumber])
		}
	}
	if lines := st.validate(e, rec); lines != nil {
		return nil, lines
	}
	if _, exists := st.tables[e.Set].rows[st.key(e, rec)]; exists {
		return nil, []string{st.duplicateText(e, rec)}
	}
	return rec, nil
}

// validate checks company, mandatory fields and string lengths.
func (st *store) validate(e *Entity, rec map[string]any) []string {
	var lines []string
	if e.company {
		if co, _ := rec[dataAreaID].(string); !st.companyKnown(co) {
			lines = append(lines, fmt.Sprintf("Error: Company '%s' does not exist.", co))
		}
	}
	for _, f := range e.all {
		v := rec[f.Name]
		if f.Mandatory && st.schema.isEmpty(f, v) {
			lines = append(lines,
				fmt.Sprintf("Warning: Field '%s' must be filled in.", f.Name),
				fmt.Sprintf("Warning: validateField failed on field '%s.%s'.", e.Target, f.Name))
		}
		if s, ok := v.(string); ok && f.Type == TypeString && f.Max > 0 && len([]rune(s)) > f.Max {
			lines = append(lines,
				fmt.Sprintf("Warning: The value '%s' of field '%s' is too long; the maximum length is %d.", s, f.Name, f.Max),
				fmt.Sprintf("Warning: validateField failed on field '%s.%s'.", e.Target, f.Name))
		}
	}
	return lines
}

func (st *store) duplicateText(e *Entity, rec map[string]any) string {
	label := e.Type
	if len(e.Labels) > 0 {
		label = e.Labels[0]
	}
	var kv []string
	for _, k := range e.Keys {
		kv = append(kv, fmt.Sprintf("%s: %v", k, rec[k]))
	}
	return fmt.Sprintf("Error: Cannot create a record in %s (%s). %s. The record already exists.", label, e.Target, strings.Join(kv, ", "))
}

// nextNumber draws the next value of a number sequence per company,
// skipping numbers that records already use.
func (st *store) nextNumber(e *Entity, company string, f *Field) string {
	key := e.Set + "|" + company + "|" + f.Name
	used := st.tables[e.Set].used[company+"|"+f.Name]
	for {
		st.seqs[key]++
		s := formatSequence(f.NumberSequence, st.seqs[key])
		if !used[strings.ToLower(s)] {
			return s
		}
	}
}

func formatSequence(pattern string, n int64) string {
	width := strings.Count(pattern, "#")
	num := fmt.Sprintf("%0*d", width, n)
	i := strings.Index(pattern, "#")
	j := strings.LastIndex(pattern, "#")
	return pattern[:i] + num + pattern[j+1:]
}

// nextLine returns the highest line number used so far within the group
// (company, group value) plus one.
func (st *store) nextLine(e *Entity, company string, f *Field, group any) any {
	maxLine := st.tables[e.Set].lines[lineKey(company, f, group)]
	if f.Type == TypeInt {
		return int64(maxLine) + 1
	}
	return maxLine + 1
}

func lineKey(company string, f *Field, group any) string {
	return company + "|" + f.Name + "|" + normKey(group)
}

// index records the numbers and line numbers a record uses.
func (st *store) index(e *Entity, rec map[string]any) {
	t := st.tables[e.Set]
	co, _ := rec[dataAreaID].(string)
	for _, f := range e.all {
		if f.NumberSequence != "" {
			if v, _ := rec[f.Name].(string); v != "" {
				k := co + "|" + f.Name
				if t.used[k] == nil {
					t.used[k] = map[string]bool{}
				}
				t.used[k][strings.ToLower(v)] = true
			}
		}
		if f.LineNumber != "" {
			var n float64
			switch x := rec[f.Name].(type) {
			case int64:
				n = float64(x)
			case float64:
				n = x
			}
			k := lineKey(co, f, rec[f.LineNumber])
			t.lines[k] = max(t.lines[k], n)
		}
	}
}

// key builds the normalized key of a record: strings compare without
// regard to case, as on F&O's SQL collation.
func (st *store) key(e *Entity, rec map[string]any) string {
	parts := make([]string, len(e.Keys))
	for i, k := range e.Keys {
		parts[i] = normKey(rec[k])
	}
	return strings.Join(parts, "\x1f")
}

func normKey(v any) string {
	switch x := v.(type) {
	case string:
		return strings.ToLower(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

func (st *store) insert(e *Entity, rec map[string]any) *row {
	t := st.tables[e.Set]
	st.version++
	r := &row{vals: rec, version: st.version}
	t.rows[st.key(e, rec)] = r
	t.sorted = nil
	st.index(e, rec)
	return r
}

func (st *store) get(e *Entity, keyVals map[string]any) *row {
	return st.tables[e.Set].rows[st.key(e, keyVals)]
}

// replace stores new values for an existing row (same key).
func (st *store) replace(e *Entity, r *row, rec map[string]any) {
	st.version++
	r.vals = rec
	r.version = st.version
	st.tables[e.Set].sorted = nil
	st.index(e, rec)
}

func (st *store) delete(e *Entity, r *row) {
	t := st.tables[e.Set]
	delete(t.rows, st.key(e, r.vals))
	t.sorted = nil
}

// rows returns the rows of a set in key order.
func (st *store) rows(e *Entity) []*row {
	t := st.tables[e.Set]
	if t.sorted == nil {
		t.sorted = make([]*row, 0, len(t.rows))
		for _, r := range t.rows {
			t.sorted = append(t.sorted, r)
		}
		sort.Slice(t.sorted, func(i, j int) bool { return compareRows(e, t.sorted[i], t.sorted[j], e.Keys) < 0 })
	}
	return t.sorted
}

// compareRows orders two rows by the given fields.
func compareRows(e *Entity, a, b *row, fields []string) int {
	for _, k := range fields {
		if c := compareValues(a.vals[k], b.vals[k]); c != 0 {
			return c
		}
	}
	return 0
}

func compareValues(a, b any) int {
	switch x := a.(type) {
	case string:
		y, _ := b.(string)
		return strings.Compare(strings.ToLower(x), strings.ToLower(y))
	case int64:
		y, _ := b.(int64)
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
	case float64:
		y, _ := b.(float64)
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
	case bool:
		y, _ := b.(bool)
		switch {
		case !x && y:
			return -1
		case x && !y:
			return 1
		}
	}
	return 0
}

// copyRecord returns a copy of a record as plain JSON values.
func copyRecord(vals map[string]any) map[string]any {
	out := make(map[string]any, len(vals))
	for k, v := range vals {
		out[k] = v
	}
	return out
}

// etag returns the @odata.etag of a row.
func etag(r *row) string {
	return `W/"` + base64Std(fmt.Sprintf("0,%d", r.version)) + `"`
}

// encodeEntity writes a record as ordered JSON: @odata.etag, then the
// fields in schema order (dataAreaId first), restricted to sel if not nil.
func encodeEntity(b *strings.Builder, e *Entity, r *row, sel map[string]bool, withEtag bool) {
	b.WriteByte('{')
	first := true
	if withEtag {
		b.WriteString(`"@odata.etag":`)
		writeJSONString(b, etag(r))
		first = false
	}
	for _, f := range e.all {
		if sel != nil && !sel[f.Name] {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		writeJSONString(b, f.Name)
		b.WriteByte(':')
		v, _ := json.Marshal(r.vals[f.Name])
		b.Write(v)
	}
	b.WriteByte('}')
}

func writeJSONString(b *strings.Builder, s string) {
	v, _ := json.Marshal(s) // strings always marshal
	b.Write(v)
}
