package odata

import (
	"strings"
)

// KeyPart is one element of a key predicate. Name is empty for the short
// form Set('value') of a single-key entity.
type KeyPart struct {
	Name  string // key property name, empty in the short form
	Value Value  // key value
}

// ParseKey parses the inside of a key predicate, such as
// dataAreaId='USMF',ProductionOrderNumber='P000101' or 'P000101'.
func ParseKey(s string) ([]KeyPart, error) {
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	var parts []KeyPart
	i := 0
	for {
		t := toks[i]
		switch {
		case t.kind == tokLiteral && len(parts) == 0 && toks[i+1].kind == tokEOF:
			return []KeyPart{{Value: t.val}}, nil
		case t.kind == tokIdent && toks[i+1].kind == tokEquals:
			v := toks[i+2]
			var val Value
			switch {
			case v.kind == tokLiteral:
				val = v.val
			case v.kind == tokIdent && (v.text == "true" || v.text == "false"):
				val = Bool(v.text == "true")
			case v.kind == tokIdent && v.text == "null":
				val = Null
			default:
				return nil, errorf(ErrSyntax, "key %q has no value", t.text)
			}
			parts = append(parts, KeyPart{Name: t.text, Value: val})
			i += 3
		default:
			return nil, errorf(ErrSyntax, "bad key predicate %q", s)
		}
		switch toks[i].kind {
		case tokEOF:
			return parts, nil
		case tokComma:
			i++
		default:
			return nil, errorf(ErrSyntax, "bad key predicate %q", s)
		}
	}
}

// Segment is the parsed resource path below the service root: an entity
// set, an optional key predicate and an optional trailing segment such as
// $count or a bound action.
type Segment struct {
	Set    string    // entity set name as written
	HasKey bool      // a key predicate followed the set
	Key    []KeyPart // the key predicate
	// Rest is what follows "Set" or "Set(...)" after a slash, e.g. "$count"
	// or "Microsoft.Dynamics.DataEntities.ImportFromPackage".
	Rest string
}

// ParseSegment parses a path relative to the service root (/data/), for
// example "ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='P1')".
func ParseSegment(p string) (Segment, error) {
	var seg Segment
	head := p
	if i := strings.IndexAny(p, "(/"); i >= 0 {
		head = p[:i]
		p = p[i:]
	} else {
		p = ""
	}
	seg.Set = head
	if seg.Set == "" {
		return seg, errorf(ErrSyntax, "empty resource path")
	}
	if strings.HasPrefix(p, "(") {
		end, err := closingParen(p)
		if err != nil {
			return seg, err
		}
		key, err := ParseKey(p[1:end])
		if err != nil {
			return seg, err
		}
		seg.HasKey, seg.Key = true, key
		p = p[end+1:]
	}
	if p != "" {
		if !strings.HasPrefix(p, "/") {
			return seg, errorf(ErrSyntax, "unexpected %q after key", p)
		}
		seg.Rest = p[1:]
	}
	return seg, nil
}

// closingParen finds the ')' matching the '(' at s[0], skipping quoted text.
func closingParen(s string) (int, error) {
	inStr := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\'':
			if inStr && i+1 < len(s) && s[i+1] == '\'' {
				i++
				continue
			}
			inStr = !inStr
		case c == ')' && !inStr:
			return i, nil
		}
	}
	return 0, errorf(ErrSyntax, "unbalanced parentheses in key predicate")
}
