package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Options supplies what the loader cannot know by itself: the plugin
// registry and access to the environment and files. The zero value parses
// without plugins (see SourceConfig) using the process environment and
// file system.
type Options struct {
	// SourceConfig returns a fresh pointer to the config struct of source
	// type typ, with the plugin's defaults already set, and false for an
	// unknown type. The keys of a source besides type and startup are
	// decoded strictly into it. A nil result means the type takes no
	// settings. When SourceConfig itself is nil every type is accepted and
	// the settings are kept as a map[string]any, unchecked.
	SourceConfig func(typ string) (any, bool)
	// SinkConfig is SourceConfig for sinks; the runner keys max_batch,
	// parallelism and retry are handled by the loader.
	SinkConfig func(typ string) (any, bool)
	// SourceTypes and SinkTypes list the known types for the message about
	// an unknown one; nil leaves the list out.
	SourceTypes, SinkTypes func() []string
	// Env looks up ${env:NAME} references; nil means os.LookupEnv.
	Env func(name string) (string, bool)
	// ReadFile reads the config file (in Load) and ${file:PATH} secrets;
	// nil means a reader like os.ReadFile that refuses files over 8 MiB, so
	// a reference to a device such as /dev/zero fails cleanly.
	ReadFile func(path string) ([]byte, error)
	// SkipSecrets leaves the references in secret fields unresolved: a
	// logging.Secret holds the text as written (such as
	// "${file:/run/credentials/plantgate.service/fo}"), no variable or file
	// is read for it, and no problem or warning is reported about it. Every
	// other check still runs. It is for commands that need only part of the
	// config, such as the queue's location, and may run where the secrets
	// cannot be read (systemd credentials exist only for the service). Never
	// run a gateway with such a config. Files are not checked either (see
	// SkipFiles): a certificate may be readable by the service user only.
	SkipSecrets bool
	// SkipFiles leaves out the checks of the files a config names
	// (certificates, keys, CA files, the data directory, plugin paths):
	// for checking a config meant for another machine. Without it each
	// must be what the gateway will need when it starts, for the user
	// that loads the config (see the file tag in the package doc).
	SkipFiles bool
}

func (o Options) withDefaults() Options {
	if o.Env == nil {
		o.Env = os.LookupEnv
	}
	if o.ReadFile == nil {
		o.ReadFile = readFileLimited
	}
	return o
}

// requiredSections are the top-level keys a config must have.
const requiredSections = "gateway, sources, sinks and flows"

// Load reads the config file at path and parses it with Parse. When the
// file cannot be read the error is also an Errors, so IsConfigError holds.
func Load(path string, opts Options) (*Config, error) {
	opts = opts.withDefaults()
	data, err := opts.ReadFile(path)
	if err != nil {
		return nil, Errors{{Pos: Pos{File: path}, Msg: "read config file: " + fileErrText(err)}}
	}
	return Parse(path, data, opts)
}

// Parse decodes, defaults, resolves and validates the config in data; file
// names it in positions. It reports every problem it finds, not just the
// first: the error is always of type Errors, sorted by line. On success
// Config.Warnings lists problems that do not stop the gateway.
func Parse(file string, data []byte, opts Options) (*Config, error) {
	o := opts.withDefaults()
	d := newDecoder(file, &o)
	root := d.parse(data)
	var c *Config
	if root != nil {
		sum := sha256.Sum256(data)
		c = &Config{File: file, Checksum: hex.EncodeToString(sum[:])}
		d.config(c, root)
	}
	if len(d.problems) > 0 || c == nil {
		return nil, Errors(sortProblems(d.problems))
	}
	c.Warnings = sortProblems(d.warnings)
	return c, nil
}

var lineRe = regexp.MustCompile(`^line (\d+): (.*)$`)
var anchorRe = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)

// parse returns the root node of the only document in data, or nil after
// reporting a problem.
func (d *decoder) parse(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.problem(Pos{File: d.file}, "empty config: want the sections "+requiredSections)
		} else {
			d.syntax(data, err)
		}
		return nil
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		d.syntax(data, err)
		return nil
	default:
		d.errorf(&next, "", "more than one YAML document; put the whole config in one")
		return nil
	}
	if len(doc.Content) != 1 || isNull(doc.Content[0]) {
		d.problem(Pos{File: d.file}, "empty config: want the sections "+requiredSections)
		return nil
	}
	root := doc.Content[0]
	if n := 2 * countNodes(root, 1<<30); n > d.budget {
		d.budget = n
	}
	return root
}

// syntax reports a YAML syntax error at the line the parser names. Tabs in
// indentation, the usual cause, are reported at each offending line.
func (d *decoder) syntax(data []byte, err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := lineRe.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	col := 0
	if m := anchorRe.FindStringSubmatch(msg); m != nil && line == 0 {
		line, col = find(data, "*"+m[1])
	}
	var tabs []Pos
	onTabLine := false
	for i, l := range bytes.Split(data, []byte("\n")) {
		indent := len(l) - len(bytes.TrimLeft(l, " \t"))
		if t := bytes.IndexByte(l[:indent], '\t'); t >= 0 && indent < len(l) {
			tabs = append(tabs, Pos{File: d.file, Line: i + 1, Column: t + 1})
			onTabLine = onTabLine || line == i+1
		}
	}
	for _, p := range tabs {
		d.problem(p, "tab in indentation; YAML indents with spaces")
	}
	if len(tabs) == 0 || !onTabLine && line != 0 {
		d.problem(Pos{File: d.file, Line: line, Column: col}, "invalid YAML: "+msg)
	}
}

// find returns the 1-based line and column of the first s in data, or 0, 0.
func find(data []byte, s string) (line, col int) {
	i := bytes.Index(data, []byte(s))
	if i < 0 {
		return 0, 0
	}
	line = bytes.Count(data[:i], []byte("\n")) + 1
	col = i - bytes.LastIndexByte(data[:i], '\n')
	return line, col
}

// namePattern is what instance names must look like: they become parts of
// queue stream names "<flow>.<sink>", so no dots.
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// config decodes the top-level mapping into c.
func (d *decoder) config(c *Config, root *yaml.Node) {
	if root.Kind != yaml.MappingNode {
		d.errorf(root, "", "want a mapping with the sections %s, got %s", requiredSections, describe(root))
		return
	}
	c.FO = map[string]*FOEnv{}
	c.Sources = map[string]*Plugin{}
	c.Sinks = map[string]*Plugin{}
	c.Flows = map[string]*Flow{}
	const valid = "gateway, log, http, fo, sources, sinks, flows"
	seen := map[string]*yaml.Node{}
	for _, e := range d.entries(root, "") {
		if d.aborted {
			return
		}
		name := e.key.Value
		seen[name] = e.key
		switch name {
		case "gateway":
			d.decodeStruct(e.val, e.key, name, reflect.ValueOf(&c.Gateway).Elem())
		case "log":
			d.decodeStruct(e.val, e.key, name, reflect.ValueOf(&c.Log).Elem())
		case "http":
			d.decodeStruct(e.val, e.key, name, reflect.ValueOf(&c.HTTP).Elem())
		case "fo":
			d.named(e.val, name, "environment", func(n string, k, v *yaml.Node, p string) {
				env := &FOEnv{}
				d.decodeStruct(v, k, p, reflect.ValueOf(env).Elem())
				d.checkFO(env, p)
				c.FO[n] = env
				c.FOOrder = append(c.FOOrder, n)
			})
		case "sources":
			d.named(e.val, name, "source", func(n string, k, v *yaml.Node, p string) {
				c.Sources[n] = d.plugin(false, k, v, p)
				c.SourceOrder = append(c.SourceOrder, n)
			})
		case "sinks":
			d.named(e.val, name, "sink", func(n string, k, v *yaml.Node, p string) {
				c.Sinks[n] = d.plugin(true, k, v, p)
				c.SinkOrder = append(c.SinkOrder, n)
			})
		case "flows":
			d.named(e.val, name, "flow", func(n string, k, v *yaml.Node, p string) {
				c.Flows[n] = d.flow(k, v, p)
				c.FlowOrder = append(c.FlowOrder, n)
			})
		default:
			if strings.HasPrefix(name, "x-") {
				// Extension keys hold anchors for aliases elsewhere.
				continue
			}
			d.errorf(e.key, name, "unknown key %q (valid: %s)", name, valid)
		}
	}
	if d.aborted {
		return
	}
	top := d.at(root, "")
	top.Line, top.Column = 1, 1
	for _, s := range []string{"gateway", "sources", "sinks", "flows"} {
		if seen[s] == nil {
			d.problem(top, fmt.Sprintf("missing required section %q", s))
		}
	}
	if seen["gateway"] == nil {
		d.fillUnset(reflect.ValueOf(&c.Gateway).Elem(), "gateway", top, nil, false)
	}
	if seen["log"] == nil {
		d.fillUnset(reflect.ValueOf(&c.Log).Elem(), "log", top, nil, false)
	}
	if seen["http"] == nil {
		d.fillUnset(reflect.ValueOf(&c.HTTP).Elem(), "http", top, nil, false)
	}
	d.checkGateway(c)
	d.crossCheck(c, seen)
	if _, written := d.pos["gateway.data_dir"]; !written && c.Gateway.DataDir != "" {
		// The default is checked as if written: the gateway creates it.
		p := d.posOr("gateway", Pos{File: d.file, Line: 1, Column: 1})
		p.Path = "gateway.data_dir"
		d.files = append(d.files, fileRef{tag: fileDir, path: c.Gateway.DataDir, pos: p})
	}
	d.checkFiles()
	c.positions = d.pos
	if len(d.problems) == 0 {
		d.validateConfig(c)
	}
}

// decodeStruct decodes a mapping value into struct v; a key with no value
// counts as an empty mapping, so required keys are reported.
func (d *decoder) decodeStruct(n, key *yaml.Node, path string, v reflect.Value) {
	r, leave := d.enter(n, path)
	defer leave()
	if r == nil {
		return
	}
	if isNull(r) {
		d.mapping(r, key, path, []reflect.Value{v}, nil, nil)
		return
	}
	d.decode(r, path, v, key)
}

// named decodes a mapping of instance names, checking each name.
func (d *decoder) named(n *yaml.Node, path, what string, fn func(name string, key, val *yaml.Node, path string)) {
	n, leave := d.enter(n, path)
	defer leave()
	if n == nil || isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping of %s names to their settings, got %s", what, describe(n))
		return
	}
	for _, e := range d.entries(n, path) {
		if d.aborted {
			return
		}
		name := e.key.Value
		p := join(path, name)
		if !namePattern.MatchString(name) {
			d.errorf(e.key, p, "invalid %s name %q: use up to 64 lowercase letters, digits, _ and -, starting with a letter or digit", what, name)
		}
		fn(name, e.key, e.val, p)
	}
}

// commonKeys are the plugin keys the loader handles itself.
var (
	sourceKeys = []string{"type", "startup", "unmatched"}
	sinkKeys   = []string{"type", "startup", "max_batch", "parallelism", "retry"}
)

// plugin decodes a source or sink instance: its common keys into Plugin
// (and Runner for a sink) and the rest into the plugin's settings.
func (d *decoder) plugin(sink bool, key, val *yaml.Node, path string) *Plugin {
	p := &Plugin{}
	kind, cfgFn, typesFn, common := "source", d.opts.SourceConfig, d.opts.SourceTypes, sourceKeys
	if sink {
		kind, cfgFn, typesFn, common = "sink", d.opts.SinkConfig, d.opts.SinkTypes, sinkKeys
	}
	targets := []reflect.Value{reflect.ValueOf(p).Elem()}
	if sink {
		targets = append(targets, reflect.ValueOf(&p.Runner).Elem())
	} else {
		targets = append(targets, reflect.ValueOf(&p.Source).Elem())
	}
	n, leave := d.enter(val, path)
	defer leave()
	if n == nil {
		p.Pos = d.at(key, path)
		for _, tv := range targets {
			d.fillUnset(tv, path, p.Pos, nil, false)
		}
		return p
	}
	if n.Kind != yaml.MappingNode {
		d.mapping(n, key, path, targets, nil, nil)
		return p
	}
	ents := d.entries(n, path)
	known := false
	var typeNode *yaml.Node
	for _, e := range ents {
		if e.key.Value == "type" {
			typeNode = e.val
		}
	}
	if tn, leave := d.enter(typeNode, path+".type"); tn != nil {
		if tn.Kind == yaml.ScalarNode && !isNull(tn) {
			typ := tn.Value
			if cfgFn == nil {
				p.Settings = map[string]any{}
			} else {
				cfg, ok := cfgFn(typ)
				if !ok {
					var list string
					if typesFn != nil {
						types := slices.Clone(typesFn())
						slices.Sort(types)
						list = fmt.Sprintf(" (valid: %s)", strings.Join(types, ", "))
					}
					d.errorf(tn, path+".type", "unknown %s type %q%s", kind, typ, list)
				} else {
					known = true
					p.Settings = cfg
				}
			}
		}
		leave()
	}
	sv := reflect.ValueOf(p.Settings)
	if known && (p.Settings == nil || sv.Kind() == reflect.Pointer && !sv.IsNil() && sv.Elem().Kind() == reflect.Struct) {
		// The usual case: all keys are checked against one list.
		if p.Settings != nil {
			targets = append(targets, sv.Elem())
		}
		d.mapping(n, key, path, targets, nil, ents)
		return p
	}
	// Split the common keys from the plugin's.
	mine := &yaml.Node{Kind: yaml.MappingNode, Line: n.Line, Column: n.Column}
	rest := &yaml.Node{Kind: yaml.MappingNode, Line: n.Line, Column: n.Column}
	for _, e := range ents {
		if slices.Contains(common, e.key.Value) {
			mine.Content = append(mine.Content, e.key, e.val)
		} else {
			rest.Content = append(rest.Content, e.key, e.val)
		}
	}
	d.mapping(mine, key, path, targets, nil, nil)
	switch {
	case !known && cfgFn != nil:
		// Unknown or missing type: the settings cannot be checked.
	case cfgFn == nil:
		if m, ok := d.raw(rest, path).(map[string]any); ok {
			p.Settings = m
		}
	case sv.Kind() == reflect.Pointer && !sv.IsNil():
		d.decode(rest, path, sv.Elem(), key)
	default:
		d.errorf(key, path, "plugin %s returned an unusable config (%T)", kind, p.Settings)
	}
	return p
}

// flow decodes one flow.
func (d *decoder) flow(key, val *yaml.Node, path string) *Flow {
	f := &Flow{}
	n, leave := d.enter(val, path)
	defer leave()
	if n == nil {
		f.Pos = d.at(key, path)
		return f
	}
	extras := []extra{
		{"map", func(_, v *yaml.Node, p string) { d.flowMap(f, v, p) }},
		{"to", func(k, v *yaml.Node, p string) { d.flowTo(f, k, v, p) }},
	}
	seen := d.mapping(n, key, path, []reflect.Value{reflect.ValueOf(f).Elem()}, extras, nil)
	if !seen["to"] && (isNull(n) || n.Kind == yaml.MappingNode) {
		d.problem(f.Pos, `missing required key "to"`)
	}
	if f.Expect.Rate != "" {
		p := d.pos[path+".expect.rate"]
		r, err := ParseRate(f.Expect.Rate)
		switch {
		case err != nil:
			d.problem(p, fmt.Sprintf("want a rate like 40/s, 100/m or 2/h, got %q", f.Expect.Rate))
		case r == 0:
			d.problem(p, fmt.Sprintf("want a rate above zero, got %q", f.Expect.Rate))
		}
	}
	return f
}

// flowMap decodes a flow's map: field name to expression, in file order.
func (d *decoder) flowMap(f *Flow, v *yaml.Node, path string) {
	n, leave := d.enter(v, path)
	defer leave()
	if n == nil || isNull(n) {
		return
	}
	d.pos[path] = d.at(n, path)
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping of field names to expressions, got %s", describe(n))
		return
	}
	for _, e := range d.entries(n, path) {
		kp := join(path, e.key.Value)
		if strings.TrimSpace(e.key.Value) == "" {
			d.errorf(e.key, kp, "want a field name, got an empty key")
			continue
		}
		var x Expr
		if !d.decode(e.val, kp, reflect.ValueOf(&x).Elem(), e.key) {
			d.errorf(e.key, kp, "want an expression for field %q, got nothing", e.key.Value)
			continue
		}
		f.Map = append(f.Map, MapField{Name: e.key.Value, Expr: x})
	}
}

// flowTo decodes a flow's to: a sink name or a list of them.
func (d *decoder) flowTo(f *Flow, key, v *yaml.Node, path string) {
	n, leave := d.enter(v, path)
	defer leave()
	if n == nil {
		return
	}
	f.ToPos = d.at(n, path)
	got := ""
	switch {
	case isNull(n):
		got = "nothing"
	case n.Kind == yaml.SequenceNode && len(n.Content) == 0:
		got = "an empty list"
	case n.Kind == yaml.MappingNode:
		got = describe(n)
	}
	if got != "" {
		d.errorf(n, path, "want a sink name or a list of sink names, got %s", got)
		return
	}
	var to []string
	d.decode(n, path, reflect.ValueOf(&to).Elem(), key)
	for i, s := range to {
		if j := slices.Index(to[:i], s); j >= 0 {
			d.problem(d.toPos(path, i, n), fmt.Sprintf("sink %q is listed twice", s))
		}
	}
	f.To = to
}

// toPos is the position of the i-th entry of a flow's to.
func (d *decoder) toPos(path string, i int, n *yaml.Node) Pos {
	if n != nil && n.Kind == yaml.ScalarNode {
		return d.pos[path]
	}
	if p, ok := d.pos[fmt.Sprintf("%s[%d]", path, i)]; ok {
		return p
	}
	return d.pos[path]
}

// posOr returns the recorded position of path, or fallback with path.
func (d *decoder) posOr(path string, fallback Pos) Pos {
	if p, ok := d.pos[path]; ok {
		return p
	}
	fallback.Path = path
	return fallback
}

// checkFO checks an F&O environment's URLs and credentials.
func (d *decoder) checkFO(env *FOEnv, path string) {
	for _, u := range []struct{ key, val string }{{"url", env.URL}, {"authority_url", env.AuthorityURL}} {
		p, ok := d.pos[join(path, u.key)]
		if !ok || u.val == "" {
			continue
		}
		if pu, err := url.Parse(u.val); err != nil || pu.Host == "" || pu.Scheme != "https" && pu.Scheme != "http" {
			d.problem(p, fmt.Sprintf("want an absolute URL like https://contoso.operations.dynamics.com, got %q", u.val))
		}
	}
	secret := !env.ClientSecret.IsZero()
	cert, key := env.CertificateFile != "", env.PrivateKeyFile != ""
	switch {
	case secret && (cert || key):
		d.fieldProblem(join(path, "client_secret"), env.Pos, "set client_secret or certificate_file and private_key_file, not both")
	case cert && !key:
		d.fieldProblem(join(path, "certificate_file"), env.Pos, "certificate_file needs private_key_file")
	case key && !cert:
		d.fieldProblem(join(path, "private_key_file"), env.Pos, "private_key_file needs certificate_file")
	case !secret && !cert && env.Pos.Line > 0 && !d.hasProblemAt(path+".client_secret"):
		d.problem(env.Pos, "missing credentials: set client_secret, or certificate_file and private_key_file")
	}
	if env.MaxConcurrent < 1 {
		d.fieldProblem(join(path, "max_concurrent"), env.Pos, fmt.Sprintf("want at least 1, got %d", env.MaxConcurrent))
	}
	if env.MaxRequestsPerSecond <= 0 {
		d.fieldProblem(join(path, "max_requests_per_second"), env.Pos, fmt.Sprintf("want a number above 0, got %v", env.MaxRequestsPerSecond))
	}
}

// fieldProblem reports a problem with the field at path unless one was
// already reported there (a value of the wrong type leaves a zero that
// would fail range checks too).
func (d *decoder) fieldProblem(path string, fallback Pos, msg string) {
	if d.hasProblemAt(path) {
		return
	}
	d.problem(d.posOr(path, fallback), msg)
}

// hasProblemAt reports whether a problem was already reported for path.
func (d *decoder) hasProblemAt(path string) bool {
	for _, p := range d.problems {
		if p.Pos.Path == path {
			return true
		}
	}
	return false
}

// checkGateway checks relations between gateway settings and each sink's
// runner settings.
func (d *decoder) checkGateway(c *Config) {
	q := c.Gateway.Queue
	top := Pos{File: d.file, Line: 1, Column: 1}
	if q.CommitMaxRecords < 1 {
		d.fieldProblem("gateway.queue.commit_max_records", top, fmt.Sprintf("want at least 1, got %d", q.CommitMaxRecords))
	}
	if q.MaxBytes > 0 {
		if q.StreamMaxBytes > q.MaxBytes {
			d.fieldProblem("gateway.queue.stream_max_bytes", top, fmt.Sprintf("stream_max_bytes (%s) is larger than max_bytes (%s)", q.StreamMaxBytes, q.MaxBytes))
		}
		if q.MaxRecordBytes > q.MaxBytes {
			d.fieldProblem("gateway.queue.max_record_bytes", top, fmt.Sprintf("max_record_bytes (%s) is larger than max_bytes (%s)", q.MaxRecordBytes, q.MaxBytes))
		}
	}
	for _, name := range c.SinkOrder {
		s := c.Sinks[name]
		path := join("sinks", name)
		r := s.Runner
		if r.MaxBatch < 1 {
			d.fieldProblem(path+".max_batch", s.Pos, fmt.Sprintf("want at least 1, got %d", r.MaxBatch))
		}
		if r.Parallelism < 1 {
			d.fieldProblem(path+".parallelism", s.Pos, fmt.Sprintf("want at least 1, got %d", r.Parallelism))
		}
		if r.Retry.Initial <= 0 {
			d.fieldProblem(path+".retry.initial", s.Pos, fmt.Sprintf("want a duration above 0, got %s", r.Retry.Initial))
		} else if r.Retry.Max < r.Retry.Initial {
			d.fieldProblem(path+".retry.max", s.Pos, fmt.Sprintf("retry.max (%s) is shorter than retry.initial (%s)", r.Retry.Max, r.Retry.Initial))
		}
	}
}

// undefined formats "<what> "x" is not defined (defined: a, b)".
func undefined(what, plural, name string, defined []string) string {
	if len(defined) == 0 {
		return fmt.Sprintf("%s %q is not defined (no %s are defined)", what, name, plural)
	}
	return fmt.Sprintf("%s %q is not defined (defined: %s)", what, name, strings.Join(defined, ", "))
}

// crossCheck checks references between sections and warns about unused
// sources and sinks.
func (d *decoder) crossCheck(c *Config, seen map[string]*yaml.Node) {
	usedSource := map[string]bool{}
	usedSink := map[string]bool{}
	for _, name := range c.FlowOrder {
		f := c.Flows[name]
		path := join("flows", name)
		if f.From != "" {
			if _, ok := c.Sources[f.From]; ok {
				usedSource[f.From] = true
			} else if seen["sources"] != nil {
				d.fieldProblem(path+".from", f.Pos, undefined("source", "sources", f.From, c.SourceOrder))
			}
		}
		if _, ok := c.Sinks[f.Overflow.Sink]; ok {
			usedSink[f.Overflow.Sink] = true
		}
		for i, s := range f.To {
			if _, ok := c.Sinks[s]; ok {
				usedSink[s] = true
			} else if seen["sinks"] != nil {
				d.problem(d.toPos(path+".to", i, nil), undefined("sink", "sinks", s, c.SinkOrder))
			}
		}
	}
	for _, r := range d.refs {
		switch r.kind {
		case "fo":
			if _, ok := c.FO[r.name]; !ok {
				d.problem(r.pos, undefined("fo environment", "fo environments", r.name, c.FOOrder))
			}
		case "source":
			if _, ok := c.Sources[r.name]; !ok {
				d.problem(r.pos, undefined("source", "sources", r.name, c.SourceOrder))
			}
		case "sink":
			if _, ok := c.Sinks[r.name]; !ok {
				d.problem(r.pos, undefined("sink", "sinks", r.name, c.SinkOrder))
			}
		case "flow":
			if _, ok := c.Flows[r.name]; !ok {
				d.problem(r.pos, undefined("flow", "flows", r.name, c.FlowOrder))
			}
		default:
			d.problem(r.pos, fmt.Sprintf("unsupported ref tag %q (want fo, source, sink or flow)", r.kind))
		}
	}
	if k := seen["flows"]; k != nil && len(c.Flows) == 0 {
		d.errorf(k, "flows", "no flows defined; a flow routes the records of a source to sinks")
	}
	if len(c.Flows) == 0 {
		return
	}
	for _, name := range c.SourceOrder {
		if !usedSource[name] {
			d.warnings = append(d.warnings, Problem{Pos: c.Sources[name].Pos, Msg: fmt.Sprintf("source %q is not read by any flow", name)})
		}
	}
	for _, name := range c.SinkOrder {
		if !usedSink[name] {
			d.warnings = append(d.warnings, Problem{Pos: c.Sinks[name].Pos, Msg: fmt.Sprintf("sink %q is not the target of any flow", name)})
		}
	}
}

// validateConfig runs the ConfigValidator of each plugin's settings.
func (d *decoder) validateConfig(c *Config) {
	run := func(plugins map[string]*Plugin, order []string) {
		for _, name := range order {
			p := plugins[name]
			v, ok := p.Settings.(ConfigValidator)
			if !ok {
				continue
			}
			for _, err := range v.ValidateConfig(c) {
				for _, e := range splitErrors(err) {
					var pr Problem
					if errors.As(e, &pr) {
						d.problems = append(d.problems, pr)
					} else {
						d.problem(p.Pos, e.Error())
					}
				}
			}
		}
	}
	run(c.Sources, c.SourceOrder)
	run(c.Sinks, c.SinkOrder)
}
