package foemu

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yamlDoc is a YAML document decoded strictly into a Go value, kept as a
// node tree so that later validation can point at file:line.
type yamlDoc struct {
	file string
	root *yaml.Node
}

var yamlLineRe = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// decodeYAML decodes data into v, rejecting unknown fields. Errors wrap
// ErrConfig and read "file:line: message", one line per problem.
func decodeYAML(file string, data []byte, v any) (*yamlDoc, error) {
	doc := &yamlDoc{file: file, root: &yaml.Node{}}
	if err := yaml.Unmarshal(data, doc.root); err != nil {
		return nil, doc.wrap(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return nil, doc.wrap(err)
	}
	return doc, nil
}

// wrap turns a yaml error into file:line messages.
func (d *yamlDoc) wrap(err error) error {
	var te *yaml.TypeError
	var lines []string
	if errors.As(err, &te) {
		lines = te.Errors
	} else {
		lines = []string{err.Error()}
	}
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if m := yamlLineRe.FindStringSubmatch(l); m != nil {
			out = append(out, d.file+":"+m[1]+": "+m[2])
			continue
		}
		out = append(out, d.file+": "+strings.TrimPrefix(l, "yaml: "))
	}
	return fmt.Errorf("%w: %s", ErrConfig, strings.Join(out, "\n"))
}

// errorf returns an ErrConfig error located at the node that path names.
// Path elements are mapping keys or decimal list indexes; the deepest node
// that exists is used.
func (d *yamlDoc) errorf(path []string, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if d == nil || d.root == nil {
		return fmt.Errorf("%w: %s", ErrConfig, msg)
	}
	return fmt.Errorf("%w: %s:%d: %s", ErrConfig, d.file, d.line(path), msg)
}

// line returns the line of the node that path names, or of its deepest
// existing ancestor.
func (d *yamlDoc) line(path []string) int {
	n := d.root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		var next *yaml.Node
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					next = n.Content[i+1]
					line = n.Content[i].Line
					break
				}
			}
		case yaml.SequenceNode:
			if i, err := strconv.Atoi(p); err == nil && i >= 0 && i < len(n.Content) {
				next = n.Content[i]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}

// p builds a path from mixed string and int elements.
func p(elems ...any) []string {
	out := make([]string, len(elems))
	for i, e := range elems {
		out[i] = fmt.Sprint(e)
	}
	return out
}
