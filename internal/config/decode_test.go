package config_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/plantgate/plantgate/internal/config"
)

// point decodes itself from "x,y" through the Unmarshaler hook.
type point struct{ X, Y int }

func (p *point) UnmarshalConfig(n *yaml.Node) error {
	if _, err := fmt.Sscanf(n.Value, "%d,%d", &p.X, &p.Y); err != nil {
		return errors.New(`want a point like "3,4"`)
	}
	return nil
}

type common struct {
	Name string `yaml:"name"`
}

type node struct {
	Node     string          `yaml:"node" required:"true"`
	Sampling config.Duration `yaml:"sampling" default:"500ms"`
}

// kitchen uses every supported field type.
type kitchen struct {
	common   `yaml:",inline"`
	Count    uint8           `yaml:"count"`
	Ratio    float32         `yaml:"ratio" default:"0.5"`
	Wait     time.Duration   `yaml:"wait" default:"1m"`
	Addr     netip.Addr      `yaml:"addr"`
	At       point           `yaml:"at"`
	Nodes    map[string]node `yaml:"nodes"`
	Opt      *node           `yaml:"opt"`
	List     []node          `yaml:"list"`
	Raw      map[string]any  `yaml:"raw"`
	Sink     string          `yaml:"sink" ref:"sink"`
	Flows    []string        `yaml:"flows" ref:"flow"`
	Untagged string
	checked  bool
}

func (k *kitchen) ValidateConfig(c *config.Config) []error {
	k.checked = true
	if k.Name == "bad" {
		return []error{errors.New("name may not be bad"), config.Problem{Pos: config.Pos{File: c.File, Line: 1, Column: 1}, Msg: "a positioned problem"}}
	}
	return nil
}

func kitchenOptions() config.Options {
	opts := testOptions()
	opts.SourceConfig = func(typ string) (any, bool) {
		if typ == "kitchen" {
			return &kitchen{}, true
		}
		return nil, false
	}
	return opts
}

const kitchenTail = `
sinks: {k: {type: recorder}}
flows: {f: {from: s, to: k}}
`

func TestDecodeTypes(t *testing.T) {
	src := `gateway: {id: g}
sources:
  s:
    type: kitchen
    name: n1
    count: 255
    wait: 1d
    addr: 10.0.0.1
    at: "3,4"
    nodes:
      good: {node: "ns=2;s=Good", sampling: 1s}
      bad: {node: "ns=2;s=Bad"}
    opt: {node: x}
    list: [{node: a}, {node: b, sampling: 2s}]
    raw: {a: [1, "two"], b: {c: true}}
    sink: k
    flows: f
    untagged: u
` + kitchenTail
	c, err := config.Parse("k.yaml", []byte(src), kitchenOptions())
	if err != nil {
		t.Fatal(err)
	}
	got := c.Sources["s"].Settings.(*kitchen)
	if !got.checked {
		t.Errorf("ValidateConfig: got not called, want called")
	}
	want := &kitchen{
		common: common{Name: "n1"}, Count: 255, Ratio: 0.5, Wait: 24 * time.Hour,
		Addr: netip.MustParseAddr("10.0.0.1"), At: point{3, 4},
		Nodes: map[string]node{
			"good": {Node: "ns=2;s=Good", Sampling: config.Duration(time.Second)},
			"bad":  {Node: "ns=2;s=Bad", Sampling: config.Duration(500 * time.Millisecond)},
		},
		Opt:  &node{Node: "x", Sampling: config.Duration(500 * time.Millisecond)},
		List: []node{{"a", config.Duration(500 * time.Millisecond)}, {"b", config.Duration(2 * time.Second)}},
		Raw:  map[string]any{"a": []any{1, "two"}, "b": map[string]any{"c": true}},
		Sink: "k", Flows: []string{"f"}, Untagged: "u", checked: true,
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(kitchen{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("settings (-want +got):\n%s", diff)
	}
	out, err := c.Redacted()
	if err != nil {
		t.Fatalf("Redacted: %v", err)
	}
	for _, s := range []string{"name: n1", "addr: 10.0.0.1", "wait: 24h", "untagged: u", "sampling: 500ms"} {
		if !strings.Contains(string(out), s) {
			t.Errorf("Redacted: got\n%s\nwant it to contain %q", out, s)
		}
	}
}

func TestDecodeTypeErrors(t *testing.T) {
	tests := []struct {
		name, settings, want string
	}{
		{"uint overflow", "count: 256", `k.yaml:5:12: sources.s.count: want an integer between 0 and 255, got 256`},
		{"negative uint", "count: -1", `k.yaml:5:12: sources.s.count: want an integer between 0 and 255, got -1`},
		{"float", "ratio: x", `k.yaml:5:12: sources.s.ratio: want a number, got "x"`},
		{"time.Duration", "wait: 10", `k.yaml:5:11: sources.s.wait: want a duration like 15m, got 10: add a unit (ms, s, m, h or d)`},
		{"text unmarshaler", "addr: 10.0.0", `k.yaml:5:11: sources.s.addr: cannot use "10.0.0": ParseAddr("10.0.0"): IPv4 address too short`},
		{"hook", "at: nowhere", `k.yaml:5:9: sources.s.at: want a point like "3,4"`},
		{"map element required", "nodes: {a: {sampling: 1s}, b: }", "k.yaml:5:13: sources.s.nodes.a: missing required key \"node\"\nk.yaml:5:32: sources.s.nodes.b: missing required key \"node\""},
		{"list element", "list: [{node: a, nod: b}]", `k.yaml:5:22: sources.s.list[0].nod: unknown key "nod" (valid: node, sampling)`},
		{"ref sink", "sink: nope", `k.yaml:5:11: sources.s.sink: sink "nope" is not defined (defined: k)`},
		{"ref flow", "flows: [f, g]", `k.yaml:5:16: sources.s.flows[1]: flow "g" is not defined (defined: f)`},
		{"config validator", "name: bad", "k.yaml:1:1: a positioned problem\nk.yaml:3:3: sources.s: name may not be bad"},
		{"alias key", "*a: 1", `k.yaml:5:5: invalid YAML: unknown anchor 'a' referenced`},
		{"merge a scalar", "<<: 5", `k.yaml:5:9: sources.s: want a mapping or a list of mappings to merge, got 5`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "gateway: {id: g}\nsources:\n  s:\n    type: kitchen\n    " + tt.settings + "\n" + kitchenTail
			_, err := config.Parse("k.yaml", []byte(src), kitchenOptions())
			if got := fmt.Sprint(err); got != tt.want {
				t.Errorf("got error\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestErrorsFormat(t *testing.T) {
	err := config.Errors{
		{Pos: config.Pos{File: "a.yaml", Line: 2, Column: 5, Path: "x.y"}, Msg: "first"},
		{Pos: config.Pos{File: "a.yaml", Line: 7}, Msg: "no column"},
		{Pos: config.Pos{File: "a.yaml"}, Msg: "no line"},
	}
	want := strings.Join([]string{"a.yaml:2:5: x.y: first", "a.yaml:7: no column", "a.yaml: no line"}, "\n")
	if got := err.Error(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
