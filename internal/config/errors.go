package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// String formats p as "file:line:column", leaving out the column when it is
// unknown and both line and column when the line is unknown.
func (p Pos) String() string {
	switch {
	case p.Line <= 0:
		return p.File
	case p.Column <= 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	default:
		return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
	}
}

// Problem is one error or warning found in a config file.
type Problem struct {
	// Pos is where the problem is; Pos.Path names the field.
	Pos Pos
	// Msg says what is wrong. It never contains a secret value.
	Msg string
}

// String formats p as "file:line:column: path: message".
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Pos.String())
	b.WriteString(": ")
	if p.Pos.Path != "" {
		b.WriteString(p.Pos.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error implements error, so a ConfigValidator can return a Problem with
// its own position.
func (p Problem) Error() string { return p.String() }

// Errors is every problem that makes a config unusable, sorted by position.
// Load and Parse return it (as an error) whenever they fail, including when
// the file cannot be read.
type Errors []Problem

// Error formats the problems one per line, as Problem.String does.
func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, p := range e {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// AsProblems returns the problems held by err, or nil when err does not
// come from Load or Parse.
func AsProblems(err error) []Problem {
	var e Errors
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// IsConfigError reports whether err (or an error it wraps) is a config
// problem returned by Load or Parse, including an unreadable file. The CLI
// exits with status 78 (EX_CONFIG) for these.
func IsConfigError(err error) bool {
	var e Errors
	return errors.As(err, &e)
}

// sortProblems orders problems by line and column, keeping the order in
// which they were found for equal positions, and drops exact repeats (an
// aliased node decoded twice reports its problems twice).
func sortProblems(ps []Problem) []Problem {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Pos.Line != ps[j].Pos.Line {
			return ps[i].Pos.Line < ps[j].Pos.Line
		}
		return ps[i].Pos.Column < ps[j].Pos.Column
	})
	out := ps[:0]
	seen := make(map[Problem]bool, len(ps))
	for _, p := range ps {
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}
