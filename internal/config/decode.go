package config

import (
	"encoding"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/plantgate/plantgate/internal/logging"
)

// Unmarshaler is implemented by a settings type that decodes its own YAML
// node, for shapes the tag-driven decoder cannot express. The node is
// already resolved (never an alias). A returned error becomes a Problem at
// the node; its text must not contain secret values. Implement
// encoding.TextMarshaler too, so Config.Redacted prints the value the way
// it is written.
type Unmarshaler interface {
	UnmarshalConfig(node *yaml.Node) error
}

// Validator is implemented by a settings struct (or any struct inside one)
// that checks itself after decoding. It is called only when the struct
// decoded without problems; each error (errors.Join is split) becomes a
// Problem at the struct's key.
type Validator interface {
	Validate() error
}

// ConfigValidator is implemented by plugin settings that check themselves
// against the whole config, for example that a referenced flow exists. It
// is called after the config decoded without problems; each error becomes
// a Problem at the plugin instance, unless it is a Problem itself, which
// keeps its own position.
type ConfigValidator interface {
	ValidateConfig(c *Config) []error
}

const (
	// minAliasBudget is the least number of nodes that aliases may expand
	// to in one file; a file may expand to twice its own size if larger.
	minAliasBudget = 100_000
	// maxProblems stops decoding a hopeless file.
	maxProblems = 500
)

var (
	durationType     = reflect.TypeFor[Duration]()
	timeDurationType = reflect.TypeFor[time.Duration]()
	sizeType         = reflect.TypeFor[Size]()
	secretType       = reflect.TypeFor[logging.Secret]()
	exprType         = reflect.TypeFor[Expr]()
	posType          = reflect.TypeFor[Pos]()
	unmarshalerType  = reflect.TypeFor[Unmarshaler]()
	textUnmarshType  = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// field is one decodable struct field.
type field struct {
	name     string
	index    []int
	required bool
	def      string
	hasDef   bool
	enum     []string
	ref      string
	min      string
	// file is the file tag: what the named file must be (files.go).
	file string
	// listen is set by listen:"true": the value is a host:port to listen on.
	listen bool
}

// reference is a value of a field tagged ref:"kind", checked once the
// whole file is decoded.
type reference struct {
	kind, name string
	pos        Pos
}

// entry is one key and value of a mapping, after merge keys are applied.
type entry struct{ key, val *yaml.Node }

// extra handles a mapping key outside the target structs.
type extra struct {
	name string
	fn   func(key, val *yaml.Node, path string)
}

// decoder turns a yaml.Node tree into values, collecting problems.
type decoder struct {
	file      string
	opts      *Options
	problems  []Problem
	warnings  []Problem
	budget    int
	aborted   bool
	active    map[*yaml.Node]bool
	defaults  map[string]*yaml.Node
	pos       map[string]Pos
	refs      []reference
	files     []fileRef
	inDefault bool
}

func newDecoder(file string, opts *Options) *decoder {
	return &decoder{
		file:     file,
		opts:     opts,
		budget:   minAliasBudget,
		active:   map[*yaml.Node]bool{},
		defaults: map[string]*yaml.Node{},
		pos:      map[string]Pos{},
	}
}

func noop() {}

// join appends a key to a dotted path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (d *decoder) at(n *yaml.Node, path string) Pos {
	return Pos{File: d.file, Line: n.Line, Column: n.Column, Path: path}
}

func (d *decoder) problem(p Pos, msg string) {
	if d.inDefault {
		p = Pos{File: d.file, Path: p.Path}
		msg = "invalid default tag: " + msg
	}
	if len(d.problems) >= maxProblems {
		if !d.aborted {
			d.problems = append(d.problems, Problem{Pos: p, Msg: "too many problems; stopping here"})
		}
		d.aborted = true
		return
	}
	d.problems = append(d.problems, Problem{Pos: p, Msg: msg})
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.problem(d.at(n, path), fmt.Sprintf(format, args...))
}

func (d *decoder) warnf(n *yaml.Node, path, format string, args ...any) {
	if d.inDefault {
		return
	}
	d.warnings = append(d.warnings, Problem{Pos: d.at(n, path), Msg: fmt.Sprintf(format, args...)})
}

// countNodes counts the nodes under n, not following aliases, stopping
// once the count passes limit.
func countNodes(n *yaml.Node, limit int) int {
	c := 1
	for _, ch := range n.Content {
		if c > limit {
			break
		}
		c += countNodes(ch, limit-c)
	}
	return c
}

// enter resolves an alias, charging its size to the alias budget and
// refusing an alias that refers to a value it is part of. The returned
// function must be called when the value has been decoded. A nil node means
// "skip": the problem is already reported.
func (d *decoder) enter(n *yaml.Node, path string) (*yaml.Node, func()) {
	if d.aborted || n == nil {
		return nil, noop
	}
	if n.Kind != yaml.AliasNode {
		return n, noop
	}
	t := n.Alias
	if t == nil {
		d.errorf(n, path, "alias *%s has no anchor", n.Value)
		return nil, noop
	}
	if d.active[t] {
		d.errorf(n, path, "alias *%s refers to a value that contains it", n.Value)
		return nil, noop
	}
	d.budget -= countNodes(t, d.budget+1)
	if d.budget < 0 {
		d.errorf(n, path, "aliases expand to too many values; simplify the anchors")
		d.aborted = true
		return nil, noop
	}
	d.active[t] = true
	return t, func() { delete(d.active, t) }
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names a node's value for "got ..." in messages. Callers must not
// use it on secret fields.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		v := []rune(n.Value)
		s := string(v)
		if len(v) > 40 {
			s = string(v[:40]) + "..."
		}
		if n.ShortTag() == "!!str" {
			return strconv.Quote(s)
		}
		return s
	}
	return "an unsupported value"
}

// fieldCache maps a struct type to its []field.
var fieldCache sync.Map

// fields lists the decodable fields of struct type t: exported fields named
// by their yaml tag (or lowercased name), with ",inline" structs flattened
// and yaml:"-" skipped.
func (d *decoder) fields(t reflect.Type) []field { return structFields(t) }

func structFields(t reflect.Type) []field {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.([]field)
	}
	var fs []field
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("yaml")
		name, flags, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(","+flags+",", ",inline,") && sf.Type.Kind() == reflect.Struct {
			for _, f := range structFields(sf.Type) {
				f.index = append([]int{i}, f.index...)
				fs = append(fs, f)
			}
			continue
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		f := field{
			name:     name,
			index:    []int{i},
			required: sf.Tag.Get("required") == "true",
			ref:      sf.Tag.Get("ref"),
			min:      sf.Tag.Get("min"),
			file:     sf.Tag.Get("file"),
			listen:   sf.Tag.Get("listen") == "true",
		}
		f.def, f.hasDef = sf.Tag.Lookup("default")
		if e := sf.Tag.Get("enum"); e != "" {
			f.enum = strings.Split(e, ",")
		}
		fs = append(fs, f)
	}
	fieldCache.Store(t, fs)
	return fs
}

// entries lists a mapping's keys and values in file order, reporting
// duplicate and non-scalar keys and applying YAML merge keys ("<<: *x"):
// merged keys take the place of the merge key unless set explicitly.
func (d *decoder) entries(n *yaml.Node, path string) []entry {
	explicit := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			continue
		}
		if first, dup := explicit[k.Value]; dup {
			d.errorf(k, join(path, k.Value), "duplicate key %q (first at line %d)", k.Value, first.Line)
			continue
		}
		explicit[k.Value] = k
	}
	var out []entry
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge":
			for _, e := range d.merged(v, path) {
				if explicit[e.key.Value] != nil || seen[e.key.Value] {
					continue
				}
				seen[e.key.Value] = true
				out = append(out, e)
			}
		case k.Kind != yaml.ScalarNode:
			d.errorf(k, path, "want a plain key, got %s", describe(k))
		case explicit[k.Value] != k || seen[k.Value]:
			// A duplicate, reported above.
		default:
			seen[k.Value] = true
			out = append(out, entry{k, v})
		}
	}
	return out
}

// merged returns the entries a merge key brings in: a mapping or a list of
// mappings, earlier ones winning.
func (d *decoder) merged(v *yaml.Node, path string) []entry {
	v, leave := d.enter(v, path)
	defer leave()
	if v == nil {
		return nil
	}
	switch v.Kind {
	case yaml.MappingNode:
		return d.entries(v, path)
	case yaml.SequenceNode:
		var out []entry
		for _, item := range v.Content {
			item, leave := d.enter(item, path)
			if item == nil {
				continue
			}
			if item.Kind != yaml.MappingNode {
				d.errorf(item, path, "want a mapping to merge, got %s", describe(item))
			} else {
				out = append(out, d.entries(item, path)...)
			}
			leave()
		}
		return out
	}
	d.errorf(v, path, "want a mapping or a list of mappings to merge, got %s", describe(v))
	return nil
}

// decode decodes n into v (settable). key is n's key node when n is a
// mapping value, used to place "missing required key" problems. It returns
// false when n is null or could not be resolved, so defaults still apply.
func (d *decoder) decode(n *yaml.Node, path string, v reflect.Value, key *yaml.Node) bool {
	n, leave := d.enter(n, path)
	defer leave()
	if n == nil {
		return false
	}
	if !d.inDefault {
		d.pos[path] = d.at(n, path)
	}
	t := v.Type()
	if t.Kind() == reflect.Pointer {
		if isNull(n) {
			v.SetZero()
			return false
		}
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		return d.decode(n, path, v.Elem(), key)
	}
	if isNull(n) {
		return false
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) && v.CanAddr() {
		if err := v.Addr().Interface().(Unmarshaler).UnmarshalConfig(n); err != nil {
			d.errorf(n, path, "%v", err)
		}
		return true
	}
	switch t {
	case durationType, timeDurationType:
		d.duration(n, path, v)
		return true
	case sizeType:
		d.size(n, path, v)
		return true
	case secretType:
		d.secret(n, path, v)
		return true
	case exprType:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "want an expression (a string; quote it if it starts with [ or {), got %s", describe(n))
			return true
		}
		v.Set(reflect.ValueOf(Expr{Src: n.Value, Pos: d.at(n, path)}))
		return true
	}
	if reflect.PointerTo(t).Implements(textUnmarshType) && v.CanAddr() {
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "want a string, got %s", describe(n))
			return true
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			d.errorf(n, path, "cannot use %s: %v", describe(n), err)
		}
		return true
	}
	switch t.Kind() {
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "want a string, got %s", describe(n))
			return true
		}
		v.SetString(d.expand(n, path))
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			d.errorf(n, path, "want true or false, got %s", describe(n))
			return true
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.errorf(n, path, "want an integer, got %s", describe(n))
			return true
		}
		if n.Decode(&i) != nil || v.OverflowInt(i) {
			d.errorf(n, path, "want an integer between %d and %d, got %s", int64(math.MinInt64)>>(64-t.Bits()), int64(math.MaxInt64)>>(64-t.Bits()), describe(n))
			return true
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var u uint64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.errorf(n, path, "want a non-negative integer, got %s", describe(n))
			return true
		}
		if n.Decode(&u) != nil || v.OverflowUint(u) {
			d.errorf(n, path, "want an integer between 0 and %d, got %s", ^uint64(0)>>(64-t.Bits()), describe(n))
			return true
		}
		v.SetUint(u)
	case reflect.Float32, reflect.Float64:
		var f float64
		tag := n.ShortTag()
		if n.Kind != yaml.ScalarNode || tag != "!!int" && tag != "!!float" || n.Decode(&f) != nil ||
			math.IsNaN(f) || math.IsInf(f, 0) || v.OverflowFloat(f) {
			d.errorf(n, path, "want a number, got %s", describe(n))
			return true
		}
		v.SetFloat(f)
	case reflect.Struct:
		d.mapping(n, key, path, []reflect.Value{v}, nil, nil)
	case reflect.Map:
		d.decodeMap(n, path, v)
	case reflect.Slice:
		d.decodeSlice(n, path, v)
	case reflect.Interface:
		if t.NumMethod() != 0 {
			d.errorf(n, path, "unsupported field type %s", t)
			return true
		}
		if r := d.raw(n, path); r != nil {
			v.Set(reflect.ValueOf(r))
		}
	default:
		d.errorf(n, path, "unsupported field type %s", t)
	}
	return true
}

// expand returns a plain string's value with ${env:NAME} expanded.
func (d *decoder) expand(n *yaml.Node, path string) string {
	if d.inDefault {
		return n.Value
	}
	out, _, missing, bad := expandEnv(n.Value, d.opts.Env, true)
	if bad != "" {
		d.errorf(n, path, "%s", bad)
	}
	for _, name := range missing {
		d.errorf(n, path, "environment variable %s is not set", name)
	}
	return out
}

func (d *decoder) duration(n *yaml.Node, path string, v reflect.Value) {
	const want = "want a duration like 15m"
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "%s, got %s", want, describe(n))
		return
	}
	val, err := ParseDuration(n.Value)
	switch {
	case err == nil:
		v.SetInt(int64(val))
	case errors.Is(err, errMissingUnit):
		d.errorf(n, path, "%s, got %s: add a unit (ms, s, m, h or d)", want, describe(n))
	case errors.Is(err, errNegative):
		d.errorf(n, path, "want a non-negative duration, got %s", describe(n))
	default:
		d.errorf(n, path, "%s, got %s", want, describe(n))
	}
}

func (d *decoder) size(n *yaml.Node, path string, v reflect.Value) {
	const want = "want a size like 512MiB or 2GiB"
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "%s, got %s", want, describe(n))
		return
	}
	val, err := ParseSize(n.Value)
	switch {
	case err == nil:
		v.SetInt(int64(val))
	case errors.Is(err, errNegative):
		d.errorf(n, path, "want a non-negative size, got %s", describe(n))
	case errors.Is(err, errUnknownUnit):
		d.errorf(n, path, "%s, got %s: %v", want, describe(n), err)
	default:
		d.errorf(n, path, "%s, got %s", want, describe(n))
	}
}

// secret resolves a logging.Secret field. Messages never include the text
// of the value, only the references in it.
func (d *decoder) secret(n *yaml.Node, path string, v reflect.Value) {
	if d.inDefault {
		return
	}
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "want a secret reference like ${env:NAME}, ${file:PATH} or ${cred:NAME}, got %s", describe(n))
		return
	}
	if d.opts.SkipSecrets {
		v.Set(reflect.ValueOf(logging.NewSecret(n.Value)))
		return
	}
	val, literal, msgs := resolveSecret(n.Value, d.opts)
	for _, m := range msgs {
		d.errorf(n, path, "%s", m)
	}
	if len(msgs) > 0 {
		return
	}
	if literal && val != "" {
		d.warnf(n, path, "secret written in the config file; use a reference like ${env:NAME}, ${file:PATH} or ${cred:NAME} (a systemd credential)")
	}
	v.Set(reflect.ValueOf(logging.NewSecret(val)))
}

// mapping decodes a mapping into one or more structs (a plugin's common
// keys and its own settings share one mapping), plus extra keys handled by
// callbacks. Unknown keys, missing required keys, enums, minimums and
// references are checked; unset fields get their default tags; each struct
// that implements Validator is validated if no problem was found. It
// returns the keys seen.
func (d *decoder) mapping(n, key *yaml.Node, path string, targets []reflect.Value, extras []extra, pre []entry) map[string]bool {
	atNode := n
	if key != nil {
		atNode = key
	}
	at := d.at(atNode, path)
	for _, tv := range targets {
		if pf := tv.FieldByName("Pos"); pf.IsValid() && pf.Type() == posType && pf.CanSet() && !d.inDefault {
			pf.Set(reflect.ValueOf(at))
		}
	}
	seen := map[string]bool{}
	set := make([]map[string]bool, len(targets))
	for i := range set {
		set[i] = map[string]bool{}
	}
	if !isNull(n) && n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping, got %s", describe(n))
		for _, tv := range targets {
			d.fillUnset(tv, path, at, nil, false)
		}
		return seen
	}
	before := len(d.problems)
	type slot struct {
		target int
		f      field
	}
	index := map[string]slot{}
	handlers := map[string]extra{}
	var valid []string
	for ti, tv := range targets {
		for _, f := range d.fields(tv.Type()) {
			if _, dup := index[f.name]; dup {
				continue
			}
			index[f.name] = slot{ti, f}
			valid = append(valid, f.name)
		}
	}
	for _, x := range extras {
		handlers[x.name] = x
		valid = append(valid, x.name)
	}
	if !isNull(n) {
		if pre == nil {
			pre = d.entries(n, path)
		}
		for _, e := range pre {
			if d.aborted {
				break
			}
			name := e.key.Value
			kp := join(path, name)
			if x, ok := handlers[name]; ok {
				seen[name] = true
				x.fn(e.key, e.val, kp)
				continue
			}
			s, ok := index[name]
			if !ok {
				d.errorf(e.key, kp, "unknown key %q (valid: %s)", name, strings.Join(valid, ", "))
				continue
			}
			fv := targets[s.target].FieldByIndex(s.f.index)
			probs := len(d.problems)
			seen[name] = true
			if d.decode(e.val, kp, fv, e.key) {
				set[s.target][name] = true
				if len(d.problems) == probs {
					d.check(s.f, fv, kp)
				}
			} else if s.f.required && len(d.problems) == probs {
				// Written with no value (or null): say so at the key.
				set[s.target][name] = true
				d.errorf(e.key, kp, "missing value for required key %q", name)
			}
		}
	}
	for ti, tv := range targets {
		d.fillUnset(tv, path, at, set[ti], true)
	}
	if len(d.problems) == before && !d.inDefault {
		for _, tv := range targets {
			d.validate(tv, at)
		}
	}
	return seen
}

// fillUnset reports missing required fields (when report is set) and
// applies default tags to zero fields that were not set, recursing into
// nested structs that were absent.
func (d *decoder) fillUnset(v reflect.Value, path string, at Pos, set map[string]bool, report bool) {
	for _, f := range d.fields(v.Type()) {
		if set[f.name] {
			continue
		}
		fv := v.FieldByIndex(f.index)
		switch {
		case f.required && report:
			p := at
			p.Path = path
			d.problem(p, fmt.Sprintf("missing required key %q", f.name))
		case f.hasDef:
			if fv.IsZero() && fv.Type() != secretType {
				d.setDefault(fv, f.def, join(path, f.name))
			}
		case isPlainStruct(fv.Type()):
			d.fillUnset(fv, join(path, f.name), at, nil, false)
		}
	}
}

// isPlainStruct reports whether t is a struct decoded field by field.
func isPlainStruct(t reflect.Type) bool {
	if t.Kind() != reflect.Struct || t == secretType || t == exprType || t == posType {
		return false
	}
	pt := reflect.PointerTo(t)
	return !pt.Implements(unmarshalerType) && !pt.Implements(textUnmarshType)
}

// setDefault decodes a default tag into v as if it had been written in the
// file.
func (d *decoder) setDefault(v reflect.Value, def, path string) {
	n, ok := d.defaults[def]
	if !ok {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(def), &doc); err == nil && len(doc.Content) == 1 {
			n = doc.Content[0]
		}
		d.defaults[def] = n
	}
	if n == nil {
		return
	}
	saved := d.inDefault
	d.inDefault = true
	d.decode(n, path, v, nil)
	d.inDefault = saved
}

// check applies a field's enum, min and ref tags to its decoded value.
func (d *decoder) check(f field, v reflect.Value, path string) {
	p := d.pos[path]
	if len(f.enum) > 0 && v.Kind() == reflect.String {
		s := v.String()
		if s != "" && !contains(f.enum, s) {
			d.problem(p, fmt.Sprintf("want one of %s; got %q", strings.Join(f.enum, ", "), s))
		}
	}
	if f.min != "" {
		d.checkMin(f.min, v, p)
	}
	if f.listen && v.Kind() == reflect.String && v.String() != "" {
		if msg := checkListen(v.String()); msg != "" {
			d.problem(p, msg)
		}
	}
	if f.file != "" && v.Kind() == reflect.String && v.String() != "" {
		d.files = append(d.files, fileRef{tag: f.file, path: v.String(), pos: p})
	}
	if f.ref != "" {
		switch {
		case v.Kind() == reflect.String:
			if v.String() != "" {
				d.refs = append(d.refs, reference{f.ref, v.String(), p})
			}
		case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
			for i := range v.Len() {
				ip, ok := d.pos[fmt.Sprintf("%s[%d]", path, i)]
				if !ok {
					ip = p
				}
				d.refs = append(d.refs, reference{f.ref, v.Index(i).String(), ip})
			}
		}
	}
}

// checkMin compares a numeric value with its min tag, decoded like a
// default of the same type.
func (d *decoder) checkMin(minTag string, v reflect.Value, p Pos) {
	m := reflect.New(v.Type()).Elem()
	d.setDefault(m, minTag, p.Path)
	below := false
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		below = v.Int() < m.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		below = v.Uint() < m.Uint()
	case reflect.Float32, reflect.Float64:
		below = v.Float() < m.Float()
	}
	if below {
		d.problem(p, fmt.Sprintf("want at least %s, got %s", minTag, formatValue(v)))
	}
}

// formatValue prints a numeric value the way it would be written.
func formatValue(v reflect.Value) string {
	switch v.Type() {
	case durationType:
		return Duration(v.Int()).String()
	case timeDurationType:
		return Duration(v.Int()).String()
	case sizeType:
		return Size(v.Int()).String()
	}
	return fmt.Sprint(v.Interface())
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// validate calls Validate on a struct that has it.
func (d *decoder) validate(v reflect.Value, at Pos) {
	if !v.CanAddr() {
		return
	}
	val, ok := v.Addr().Interface().(Validator)
	if !ok {
		return
	}
	for _, err := range splitErrors(val.Validate()) {
		d.problem(at, err.Error())
	}
}

// splitErrors flattens errors.Join results.
func splitErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, splitErrors(e)...)
		}
		return out
	}
	return []error{err}
}

func (d *decoder) decodeMap(n *yaml.Node, path string, v reflect.Value) {
	t := v.Type()
	if t.Key().Kind() != reflect.String {
		d.errorf(n, path, "unsupported field type %s", t)
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping, got %s", describe(n))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(t))
	}
	for _, e := range d.entries(n, path) {
		if d.aborted {
			return
		}
		kp := join(path, e.key.Value)
		ev := reflect.New(t.Elem()).Elem()
		if !d.decode(e.val, kp, ev, e.key) {
			// A key with no value still counts: a struct element gets its
			// defaults and required checks.
			et := t.Elem()
			if et.Kind() == reflect.Pointer && isPlainStruct(et.Elem()) {
				ev.Set(reflect.New(et.Elem()))
				d.mapping(e.val, e.key, kp, []reflect.Value{ev.Elem()}, nil, nil)
			} else if isPlainStruct(et) {
				d.mapping(e.val, e.key, kp, []reflect.Value{ev}, nil, nil)
			}
		}
		v.SetMapIndex(reflect.ValueOf(e.key.Value).Convert(t.Key()), ev)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, path string, v reflect.Value) {
	t := v.Type()
	if n.Kind == yaml.ScalarNode && t.Elem().Kind() == reflect.String && t.Elem() == reflect.TypeFor[string]() {
		// A single string where a list of strings is wanted.
		ev := reflect.New(t.Elem()).Elem()
		d.decode(n, path, ev, nil)
		v.Set(reflect.Append(reflect.MakeSlice(t, 0, 1), ev))
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "want a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(t, 0, len(n.Content))
	for i, item := range n.Content {
		if d.aborted {
			return
		}
		ev := reflect.New(t.Elem()).Elem()
		d.decode(item, fmt.Sprintf("%s[%d]", path, i), ev, nil)
		s = reflect.Append(s, ev)
	}
	v.Set(s)
}

// raw decodes a node into plain Go values: map[string]any, []any, string,
// bool, int, float64, nil. Strings get ${env:NAME} expansion.
func (d *decoder) raw(n *yaml.Node, path string) any {
	n, leave := d.enter(n, path)
	defer leave()
	if n == nil {
		return nil
	}
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		for _, e := range d.entries(n, path) {
			if d.aborted {
				break
			}
			m[e.key.Value] = d.raw(e.val, join(path, e.key.Value))
		}
		return m
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		for i, item := range n.Content {
			if d.aborted {
				break
			}
			s = append(s, d.raw(item, fmt.Sprintf("%s[%d]", path, i)))
		}
		return s
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil
		case "!!str":
			return d.expand(n, path)
		}
		var x any
		if err := n.Decode(&x); err != nil {
			d.errorf(n, path, "cannot decode %s: %v", describe(n), strings.TrimPrefix(err.Error(), "yaml: "))
			return nil
		}
		return x
	}
	d.errorf(n, path, "unsupported value")
	return nil
}
