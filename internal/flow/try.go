package flow

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// Trial is what a flow makes of one message, for plantgate flow test: the
// same evaluation the router does, without the queue.
type Trial struct {
	// Matched is true when the flow's when selected the message and it
	// mapped without error.
	Matched bool
	// Why says why the flow did not select the message (empty when it
	// did): the when expression and, for a condition of several parts
	// joined by &&, the first part that is false.
	Why string
	// Err is set when the message cannot become a record: it does not
	// decode, or when, key, id or a map expression fails. The router
	// dead-letters such a message in the source's stream with this reason.
	Err error
	// Record is the record the flow makes (Key, ID, Fields, Source, Flow,
	// Time, Meta, Raw); its Stream is empty.
	Record pipeline.Record
}

// Try evaluates the flow for message m of source, as the router does.
func (f *Flow) Try(source string, m pipeline.Message) Trial {
	if m.DecodeErr != nil {
		return Trial{Err: fmt.Errorf("decode: %w", m.DecodeErr)}
	}
	rec, ok, err := f.apply(source, m)
	switch {
	case err != nil:
		return Trial{Err: err, Record: rec}
	case !ok:
		return Trial{Why: f.whyNot(source, m)}
	}
	return Trial{Matched: true, Record: rec}
}

// WhenSource is the flow's when expression as written ("" for none).
func (f *Flow) WhenSource() string { return f.cfg.When.Src }

// KeySource and IDSource are the flow's key and id expressions.
func (f *Flow) KeySource() string { return f.cfg.Key.Src }

// IDSource is the flow's id expression as written ("" for none).
func (f *Flow) IDSource() string { return f.cfg.ID.Src }

// OverflowSink is the fo.dmf sink the flow's records go to under
// pressure on its OData stream ("" for none).
func (f *Flow) OverflowSink() string { return f.cfg.Overflow.Sink }

// whyNot explains a when that is false for m: for a && chain, the first
// part that is false.
func (f *Flow) whyNot(source string, m pipeline.Message) string {
	why := fmt.Sprintf("when is false: %s", f.cfg.When.Src)
	tree, err := parser.Parse(f.cfg.When.Src)
	if err != nil {
		return why
	}
	parts := conjuncts(tree.Node)
	if len(parts) < 2 {
		return why
	}
	env := f.env(source, m)
	for _, p := range parts {
		src := p.String()
		prog, err := compileSrc(src, expr.AsBool())
		if err != nil {
			return why
		}
		v, err := vm.Run(prog, env)
		if err != nil {
			return fmt.Sprintf("%s (the part %s fails: %v)", why, src, firstLine(err.Error()))
		}
		if b, _ := v.(bool); !b {
			return fmt.Sprintf("%s (the part %s is false)", why, src)
		}
	}
	return why
}

// boolConvRe matches expr's runtime error for a when whose value is not a
// bool (the expression's type was only known at run time).
var boolConvRe = regexp.MustCompile(`^invalid operation: bool\((\w+)\)`)

// notCondition explains expr's error for a when that gave something
// other than true or false.
func notCondition(err error) error {
	if m := boolConvRe.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("gives %s, not true or false: when must be a condition, such as payload.good > 0", m[1])
	}
	return err
}

// conjuncts splits a && b && c into its parts.
func conjuncts(n ast.Node) []ast.Node {
	if b, ok := n.(*ast.BinaryNode); ok && (b.Operator == "&&" || b.Operator == "and") {
		return append(conjuncts(b.Left), conjuncts(b.Right)...)
	}
	return []ast.Node{n}
}

// env is what the flow's expressions see for m (as apply builds it).
func (f *Flow) env(source string, m pipeline.Message) map[string]any {
	payload, isMap := m.Payload.(map[string]any)
	if !isMap {
		payload = map[string]any{"value": m.Payload}
	}
	meta := m.Meta
	if meta == nil {
		meta = map[string]any{}
	}
	topic, _ := meta["topic"].(string)
	return map[string]any{"payload": payload, "meta": meta, "topic": topic, "raw": string(m.Raw), "received_at": m.Time, "source": source}
}

// compileSrc compiles an expression with the flows' environment.
func compileSrc(src string, opts ...expr.Option) (*vm.Program, error) {
	all := append([]expr.Option{expr.Env(exprEnv()), expr.MaxNodes(2000)}, exprFuncs...)
	p, err := expr.Compile(src, append(all, opts...)...)
	if err != nil {
		return nil, errors.New(firstLine(err.Error()))
	}
	return p, nil
}
