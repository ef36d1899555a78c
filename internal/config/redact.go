package config

import (
	"bytes"
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/plantgate/plantgate/internal/logging"
)

// Redacted renders the effective config (every default filled in, plugin
// settings included, ${env:...} references expanded) as YAML, with each
// secret shown as [REDACTED]. It is what check-config --print shows.
func (c *Config) Redacted() ([]byte, error) {
	root := mapNode()
	addKey(root, "gateway", encodeValue(reflect.ValueOf(c.Gateway)))
	addKey(root, "log", encodeValue(reflect.ValueOf(c.Log)))
	addKey(root, "http", encodeValue(reflect.ValueOf(c.HTTP)))
	fo := mapNode()
	for _, name := range c.FOOrder {
		addKey(fo, name, encodeValue(reflect.ValueOf(c.FO[name])))
	}
	addKey(root, "fo", fo)
	sources := mapNode()
	for _, name := range c.SourceOrder {
		addKey(sources, name, pluginNode(c.Sources[name], false))
	}
	addKey(root, "sources", sources)
	sinks := mapNode()
	for _, name := range c.SinkOrder {
		addKey(sinks, name, pluginNode(c.Sinks[name], true))
	}
	addKey(root, "sinks", sinks)
	flows := mapNode()
	for _, name := range c.FlowOrder {
		addKey(flows, name, flowNode(c.Flows[name]))
	}
	addKey(root, "flows", flows)

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return buf.Bytes(), nil
}

func mapNode() *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode} }

func strNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

func addKey(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, strNode(key), v)
}

func pluginNode(p *Plugin, sink bool) *yaml.Node {
	if p == nil {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
	}
	n := encodeValue(reflect.ValueOf(*p))
	if sink {
		r := encodeValue(reflect.ValueOf(p.Runner))
		n.Content = append(n.Content, r.Content...)
	}
	if p.Settings != nil {
		if s := encodeValue(reflect.ValueOf(p.Settings)); s.Kind == yaml.MappingNode {
			n.Content = append(n.Content, s.Content...)
		} else {
			addKey(n, "settings", s)
		}
	}
	return n
}

func flowNode(f *Flow) *yaml.Node {
	n := mapNode()
	if f == nil {
		return n
	}
	addKey(n, "from", strNode(f.From))
	for _, x := range []struct {
		key string
		e   Expr
	}{{"when", f.When}, {"key", f.Key}, {"id", f.ID}} {
		if x.e.Src != "" {
			addKey(n, x.key, strNode(x.e.Src))
		}
	}
	if len(f.Map) > 0 {
		m := mapNode()
		for _, mf := range f.Map {
			addKey(m, mf.Name, strNode(mf.Expr.Src))
		}
		addKey(n, "map", m)
	}
	to := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, s := range f.To {
		to.Content = append(to.Content, strNode(s))
	}
	addKey(n, "to", to)
	addKey(n, "expect", encodeValue(reflect.ValueOf(f.Expect)))
	if f.AcceptDuplicates {
		addKey(n, "accept_duplicates", encodeValue(reflect.ValueOf(f.AcceptDuplicates)))
	}
	if f.Overflow.Sink != "" {
		addKey(n, "overflow", encodeValue(reflect.ValueOf(f.Overflow)))
	}
	return n
}

// encodeValue renders a decoded value as a node, redacting secrets.
func encodeValue(v reflect.Value) *yaml.Node {
	null := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
	if !v.IsValid() {
		return null
	}
	if !v.CanInterface() {
		// Reached through an unexported field; never decoded either.
		return null
	}
	switch v.Type() {
	case secretType:
		s := v.Interface().(logging.Secret)
		return strNode(s.String())
	case durationType, timeDurationType:
		return &yaml.Node{Kind: yaml.ScalarNode, Value: Duration(v.Int()).String()}
	case sizeType:
		return &yaml.Node{Kind: yaml.ScalarNode, Value: Size(v.Int()).String()}
	case exprType:
		return strNode(v.Interface().(Expr).Src)
	}
	if tm, ok := v.Interface().(encoding.TextMarshaler); ok && v.Kind() != reflect.Pointer && v.Kind() != reflect.Interface {
		b, err := tm.MarshalText()
		if err != nil {
			return strNode("<" + err.Error() + ">")
		}
		return strNode(string(b))
	}
	switch v.Kind() {
	case reflect.String:
		return strNode(v.String())
	case reflect.Bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(v.Bool())}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatInt(v.Int(), 10)}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatUint(v.Uint(), 10)}
	case reflect.Float32, reflect.Float64:
		// Untagged, so 20 prints as 20 rather than !!float 20.
		return &yaml.Node{Kind: yaml.ScalarNode, Value: strconv.FormatFloat(v.Float(), 'g', -1, 64)}
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return null
		}
		return encodeValue(v.Elem())
	case reflect.Struct:
		n := mapNode()
		for _, f := range structFields(v.Type()) {
			addKey(n, f.name, encodeValue(v.FieldByIndex(f.index)))
		}
		return n
	case reflect.Map:
		n := mapNode()
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int {
			return compareStrings(fmt.Sprint(a.Interface()), fmt.Sprint(b.Interface()))
		})
		for _, k := range keys {
			addKey(n, fmt.Sprint(k.Interface()), encodeValue(v.MapIndex(k)))
		}
		return n
	case reflect.Slice, reflect.Array:
		n := &yaml.Node{Kind: yaml.SequenceNode}
		for i := range v.Len() {
			n.Content = append(n.Content, encodeValue(v.Index(i)))
		}
		if len(n.Content) == 0 {
			n.Style = yaml.FlowStyle
		}
		return n
	}
	return strNode(fmt.Sprintf("<%s>", v.Type()))
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
