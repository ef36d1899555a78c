package odata

import (
	"fmt"
	"strings"
)

type tokKind int

const (
	tokEOF tokKind = iota
	tokIdent
	tokLiteral
	tokLParen
	tokRParen
	tokComma
	tokEquals
)

type token struct {
	kind tokKind
	text string // identifier text (tokIdent) or source text
	val  Value  // tokLiteral
	pos  int
}

// lex splits an expression into tokens. It understands quoted strings with
// doubled quotes, qualified enum literals (Namespace.Type'Member'), numbers,
// unquoted dates and date-times, GUIDs, identifiers and punctuation.
func lex(s string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '(':
			toks = append(toks, token{kind: tokLParen, text: "(", pos: i})
			i++
		case c == ')':
			toks = append(toks, token{kind: tokRParen, text: ")", pos: i})
			i++
		case c == ',':
			toks = append(toks, token{kind: tokComma, text: ",", pos: i})
			i++
		case c == '=':
			toks = append(toks, token{kind: tokEquals, text: "=", pos: i})
			i++
		case c == '\'':
			str, n, err := lexString(s[i:])
			if err != nil {
				return nil, fmt.Errorf("%w at position %d", err, i)
			}
			toks = append(toks, token{kind: tokLiteral, text: s[i : i+n], val: String(str), pos: i})
			i += n
		case isDigit(c) || c == '-' || c == '.':
			j := i + 1
			for j < len(s) && isBareChar(s[j]) {
				j++
			}
			v, err := parseBareLiteral(s[i:j])
			if err != nil {
				return nil, fmt.Errorf("%w at position %d", err, i)
			}
			toks = append(toks, token{kind: tokLiteral, text: s[i:j], val: v, pos: i})
			i = j
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			ident := s[i:j]
			if j < len(s) && s[j] == '\'' {
				// Qualified literal: Namespace.EnumType'Member'.
				str, n, err := lexString(s[j:])
				if err != nil {
					return nil, fmt.Errorf("%w at position %d", err, j)
				}
				v := Value{Kind: KindEnum, EnumType: ident, Str: str}
				toks = append(toks, token{kind: tokLiteral, text: s[i : j+n], val: v, pos: i})
				i = j + n
				continue
			}
			toks = append(toks, token{kind: tokIdent, text: ident, pos: i})
			i = j
		default:
			return nil, errorf(ErrSyntax, "unexpected character %q at position %d", c, i)
		}
	}
	toks = append(toks, token{kind: tokEOF, pos: len(s)})
	return toks, nil
}

// lexString reads a quoted string at the start of s and returns its value
// and the number of bytes consumed.
func lexString(s string) (string, int, error) {
	var b strings.Builder
	i := 1
	for i < len(s) {
		if s[i] == '\'' {
			if i+1 < len(s) && s[i+1] == '\'' {
				b.WriteByte('\'')
				i += 2
				continue
			}
			return b.String(), i + 1, nil
		}
		b.WriteByte(s[i])
		i++
	}
	return "", 0, errorf(ErrSyntax, "unterminated string literal")
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isIdentStart(c byte) bool {
	return c == '_' || c == '$' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentChar(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '.' }

// isBareChar reports whether c may continue an unquoted number, date,
// date-time or GUID.
func isBareChar(c byte) bool {
	return isDigit(c) || c == '-' || c == ':' || c == '.' || c == '+' ||
		(c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == 'T' || c == 'Z'
}
