package odata

import (
	"strings"
	"time"
)

// maxFilterDepth bounds nesting so that hostile input cannot exhaust the stack.
const maxFilterDepth = 64

// Filter is a parsed $filter expression. Build one with ParseFilter, check it
// against an entity type with Bind, then evaluate it per record with Match.
type Filter struct {
	root node
	src  string
}

// PropertyType describes a property for Bind: its value kind and, for enums,
// its member names.
type PropertyType struct {
	Kind Kind // value kind
	// Edm is the type name shown in error messages, e.g. Edm.Int64; empty
	// means Kind's default name.
	Edm string
	// Members lists valid enum members (KindEnum only).
	Members []string
}

type node interface{}

type binaryNode struct {
	op   string // and, or, eq, ne, gt, ge, lt, le
	l, r node
}

type notNode struct{ x node }

type propNode struct{ name string }

type litNode struct {
	v   Value
	src string
}

// ParseFilter parses a $filter expression. It supports the comparison
// operators eq, ne, gt, ge, lt and le, the logical operators and, or and not,
// parentheses, and literals of every kind Finance & Operations uses. It
// returns an error wrapping ErrSyntax or ErrUnsupported (has, in,
// arithmetic, functions).
func ParseFilter(s string) (*Filter, error) {
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	n, err := p.parseOr(0)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tokEOF {
		return nil, errorf(ErrSyntax, "unexpected %q at position %d", t.text, t.pos)
	}
	return &Filter{root: n, src: s}, nil
}

// String returns the source text of the filter.
func (f *Filter) String() string { return f.src }

type parser struct {
	toks []token
	i    int
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

func (p *parser) keyword(words ...string) (string, bool) {
	t := p.peek()
	if t.kind != tokIdent {
		return "", false
	}
	for _, w := range words {
		if t.text == w {
			return w, true
		}
	}
	return "", false
}

func (p *parser) parseOr(depth int) (node, error) {
	if depth > maxFilterDepth {
		return nil, errorf(ErrSyntax, "expression nested too deeply")
	}
	l, err := p.parseAnd(depth)
	if err != nil {
		return nil, err
	}
	for {
		if _, ok := p.keyword("or"); !ok {
			return l, nil
		}
		p.next()
		r, err := p.parseAnd(depth)
		if err != nil {
			return nil, err
		}
		l = &binaryNode{op: "or", l: l, r: r}
	}
}

func (p *parser) parseAnd(depth int) (node, error) {
	l, err := p.parseNot(depth)
	if err != nil {
		return nil, err
	}
	for {
		if _, ok := p.keyword("and"); !ok {
			return l, nil
		}
		p.next()
		r, err := p.parseNot(depth)
		if err != nil {
			return nil, err
		}
		l = &binaryNode{op: "and", l: l, r: r}
	}
}

func (p *parser) parseNot(depth int) (node, error) {
	if _, ok := p.keyword("not"); ok {
		p.next()
		if depth > maxFilterDepth {
			return nil, errorf(ErrSyntax, "expression nested too deeply")
		}
		x, err := p.parseNot(depth + 1)
		if err != nil {
			return nil, err
		}
		return &notNode{x: x}, nil
	}
	return p.parseCompare(depth)
}

var arithmetic = map[string]bool{"add": true, "sub": true, "mul": true, "div": true, "divby": true, "mod": true}

func (p *parser) parseCompare(depth int) (node, error) {
	l, err := p.parsePrimary(depth)
	if err != nil {
		return nil, err
	}
	t := p.peek()
	if t.kind != tokIdent {
		return l, nil
	}
	switch {
	case t.text == "has" || t.text == "in":
		return nil, errorf(ErrUnsupported, "the %q operator is not supported by Finance and Operations", t.text)
	case arithmetic[t.text]:
		return nil, errorf(ErrUnsupported, "arithmetic operator %q is not supported by the emulator", t.text)
	}
	op, ok := p.keyword("eq", "ne", "gt", "ge", "lt", "le")
	if !ok {
		return l, nil
	}
	p.next()
	r, err := p.parsePrimary(depth)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind == tokIdent && arithmetic[t.text] {
		return nil, errorf(ErrUnsupported, "arithmetic operator %q is not supported by the emulator", t.text)
	}
	return &binaryNode{op: op, l: l, r: r}, nil
}

func (p *parser) parsePrimary(depth int) (node, error) {
	t := p.next()
	switch t.kind {
	case tokLParen:
		n, err := p.parseOr(depth + 1)
		if err != nil {
			return nil, err
		}
		if c := p.next(); c.kind != tokRParen {
			return nil, errorf(ErrSyntax, "expected ')' at position %d", c.pos)
		}
		return n, nil
	case tokLiteral:
		return &litNode{v: t.val, src: t.text}, nil
	case tokIdent:
		switch t.text {
		case "true":
			return &litNode{v: Bool(true), src: t.text}, nil
		case "false":
			return &litNode{v: Bool(false), src: t.text}, nil
		case "null":
			return &litNode{v: Null, src: t.text}, nil
		case "and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le":
			return nil, errorf(ErrSyntax, "unexpected %q at position %d", t.text, t.pos)
		}
		if p.peek().kind == tokLParen {
			return nil, errorf(ErrUnsupported, "query function %q is not supported; use eq with '*' wildcards instead of contains", t.text)
		}
		if strings.Contains(t.text, "/") || strings.HasPrefix(t.text, "$") {
			return nil, errorf(ErrUnsupported, "%q is not supported in $filter", t.text)
		}
		return &propNode{name: t.text}, nil
	case tokEOF:
		return nil, errorf(ErrSyntax, "unexpected end of expression")
	}
	return nil, errorf(ErrSyntax, "unexpected %q at position %d", t.text, t.pos)
}

// Properties returns the property names the filter references, in order of
// appearance, without duplicates.
func (f *Filter) Properties() []string {
	var out []string
	seen := map[string]bool{}
	var walk func(n node)
	walk = func(n node) {
		switch n := n.(type) {
		case *binaryNode:
			walk(n.l)
			walk(n.r)
		case *notNode:
			walk(n.x)
		case *propNode:
			if !seen[n.name] {
				seen[n.name] = true
				out = append(out, n.name)
			}
		}
	}
	walk(f.root)
	return out
}

// Bind checks the filter against an entity type: every property must exist
// and every comparison must have compatible operands. typeName is used in
// error messages (e.g. Microsoft.Dynamics.DataEntities.ProductionOrderHeader).
// The errors wrap ErrUnknownProperty or ErrType and carry the text the OData
// stack of Finance & Operations uses.
func (f *Filter) Bind(typeName string, lookup func(name string) (PropertyType, bool)) error {
	_, err := bindNode(f.root, typeName, lookup)
	return err
}

// operandType is what bindNode learns about a sub-expression.
type operandType struct {
	kind    Kind
	edm     string
	members []string
	isLit   bool
	lit     Value
}

func (o operandType) edmName() string {
	if o.edm != "" {
		return o.edm
	}
	if o.isLit && o.kind == KindNumber && o.lit.Num == float64(int64(o.lit.Num)) {
		return "Edm.Int32"
	}
	if o.isLit && o.kind == KindEnum && o.lit.EnumType != "" {
		return o.lit.EnumType
	}
	return o.kind.String()
}

var opNames = map[string]string{
	"eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual",
	"lt": "LessThan", "le": "LessThanOrEqual", "and": "And", "or": "Or",
}

func bindNode(n node, typeName string, lookup func(string) (PropertyType, bool)) (operandType, error) {
	switch n := n.(type) {
	case *propNode:
		pt, ok := lookup(n.name)
		if !ok {
			return operandType{}, errorf(ErrUnknownProperty, "Could not find a property named '%s' on type '%s'.", n.name, typeName)
		}
		return operandType{kind: pt.Kind, edm: pt.Edm, members: pt.Members}, nil
	case *litNode:
		return operandType{kind: n.v.Kind, isLit: true, lit: n.v}, nil
	case *notNode:
		x, err := bindNode(n.x, typeName, lookup)
		if err != nil {
			return x, err
		}
		if x.kind != KindBool {
			return x, errorf(ErrType, "The operand for a unary operator 'Not' must be of type 'Edm.Boolean', found '%s'.", x.edmName())
		}
		return operandType{kind: KindBool}, nil
	case *binaryNode:
		l, err := bindNode(n.l, typeName, lookup)
		if err != nil {
			return l, err
		}
		r, err := bindNode(n.r, typeName, lookup)
		if err != nil {
			return r, err
		}
		if n.op == "and" || n.op == "or" {
			if l.kind != KindBool || r.kind != KindBool {
				return l, incompatible(l, r, n.op)
			}
			return operandType{kind: KindBool}, nil
		}
		if !comparable(l, r, n.op) {
			return l, incompatible(l, r, n.op)
		}
		return operandType{kind: KindBool}, nil
	}
	return operandType{}, errorf(ErrSyntax, "empty expression")
}

func incompatible(l, r operandType, op string) error {
	return errorf(ErrType, "A binary operator with incompatible types was detected. Found operand types '%s' and '%s' for operator kind '%s'.", l.edmName(), r.edmName(), opNames[op])
}

// comparable reports whether l op r is allowed. Enums and booleans allow
// only eq and ne; null compares with anything through eq and ne; a quoted
// string may stand for a date or an enum member (the emulator is lenient
// there and parses it).
func comparable(l, r operandType, op string) bool {
	eqOnly := op == "eq" || op == "ne"
	if l.kind == KindNull || r.kind == KindNull {
		return eqOnly
	}
	if l.kind == r.kind {
		if l.kind == KindEnum || l.kind == KindBool {
			return eqOnly
		}
		return true
	}
	// Allow a string literal against a date or enum property, in either order.
	for _, pair := range [][2]operandType{{l, r}, {r, l}} {
		prop, lit := pair[0], pair[1]
		if !lit.isLit || lit.kind != KindString {
			continue
		}
		switch prop.kind {
		case KindTime:
			if _, err := ParseTime(lit.lit.Str); err == nil {
				return true
			}
		case KindEnum:
			return eqOnly
		}
	}
	return false
}

// Match evaluates the filter against one record. get returns the value of a
// property; it is only called for properties that passed Bind. String
// comparisons ignore case, as on the SQL Server collation Finance &
// Operations uses, and a '*' in a string literal compared with eq or ne is
// a wildcard.
func (f *Filter) Match(get func(name string) Value) bool {
	v := eval(f.root, get)
	return v.Kind == KindBool && v.Bool
}

func eval(n node, get func(string) Value) Value {
	switch n := n.(type) {
	case *propNode:
		return get(n.name)
	case *litNode:
		return n.v
	case *notNode:
		x := eval(n.x, get)
		return Bool(x.Kind == KindBool && !x.Bool)
	case *binaryNode:
		switch n.op {
		case "and":
			l := eval(n.l, get)
			if l.Kind != KindBool || !l.Bool {
				return Bool(false)
			}
			r := eval(n.r, get)
			return Bool(r.Kind == KindBool && r.Bool)
		case "or":
			l := eval(n.l, get)
			if l.Kind == KindBool && l.Bool {
				return Bool(true)
			}
			r := eval(n.r, get)
			return Bool(r.Kind == KindBool && r.Bool)
		}
		return Bool(compare(eval(n.l, get), eval(n.r, get), n.op, isLiteral(n.l), isLiteral(n.r)))
	}
	return Null
}

func isLiteral(n node) bool { _, ok := n.(*litNode); return ok }

func compare(l, r Value, op string, lLit, rLit bool) bool {
	if l.Kind == KindNull || r.Kind == KindNull {
		same := l.Kind == r.Kind
		switch op {
		case "eq":
			return same
		case "ne":
			return !same
		}
		return false
	}
	l, r = coerce(l, r)
	if l.Kind != r.Kind {
		return op == "ne"
	}
	var c int
	switch l.Kind {
	case KindString, KindEnum:
		if (op == "eq" || op == "ne") && l.Kind == KindString {
			var m bool
			switch {
			case rLit && strings.Contains(r.Str, "*"):
				m = wildcardMatch(r.Str, l.Str)
			case lLit && strings.Contains(l.Str, "*"):
				m = wildcardMatch(l.Str, r.Str)
			default:
				m = strings.EqualFold(l.Str, r.Str)
			}
			return m == (op == "eq")
		}
		c = strings.Compare(strings.ToLower(l.Str), strings.ToLower(r.Str))
	case KindNumber:
		switch {
		case l.Num < r.Num:
			c = -1
		case l.Num > r.Num:
			c = 1
		}
	case KindBool:
		if l.Bool != r.Bool {
			c = 1
		}
	case KindTime:
		lt, rt := l.Time, r.Time
		if l.DateOnly || r.DateOnly {
			// A date literal compares with the calendar day of a date field.
			lt = lt.Truncate(24 * time.Hour)
			rt = rt.Truncate(24 * time.Hour)
		}
		c = lt.Compare(rt)
	}
	switch op {
	case "eq":
		return c == 0
	case "ne":
		return c != 0
	case "gt":
		return c > 0
	case "ge":
		return c >= 0
	case "lt":
		return c < 0
	case "le":
		return c <= 0
	}
	return false
}

// coerce converts a string operand to the kind of the other operand where
// Bind allowed it (dates and enum members written as quoted strings).
func coerce(l, r Value) (Value, Value) {
	conv := func(s Value, to Value) Value {
		switch to.Kind {
		case KindTime:
			if t, err := ParseTime(s.Str); err == nil {
				return t
			}
		case KindEnum:
			return Value{Kind: KindEnum, Str: s.Str}
		}
		return s
	}
	if l.Kind == KindString && r.Kind != KindString {
		l = conv(l, r)
	} else if r.Kind == KindString && l.Kind != KindString {
		r = conv(r, l)
	}
	if l.Kind == KindEnum && r.Kind == KindEnum {
		// Enum members compare by name, ignoring case.
		l.Str, r.Str = strings.ToLower(l.Str), strings.ToLower(r.Str)
	}
	return l, r
}

// wildcardMatch matches s against pattern, where '*' matches any run of
// characters, ignoring case.
func wildcardMatch(pattern, s string) bool {
	pattern, s = strings.ToLower(pattern), strings.ToLower(s)
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, last)
}
