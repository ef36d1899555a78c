package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strings"
)

// maxFileBytes bounds a file read through the default Options.ReadFile, so
// a reference such as ${file:/dev/zero} fails instead of eating memory.
const maxFileBytes = 8 << 20

// readFileLimited is the default Options.ReadFile.
func readFileLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("file is larger than %d MiB", maxFileBytes>>20)
	}
	return b, nil
}

var envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expandEnv replaces each ${env:NAME} in s with the variable's value and
// "$${" with a literal "${". It returns the names of unset variables and a
// description of the first malformed reference. Other "${...}" text is
// kept as written, except ${file:...} and ${cred:...}, which only a
// secret accepts as its whole value. The result is never put into a message.
func expandEnv(s string, lookup func(string) (string, bool), bare bool) (out string, refs int, missing []string, bad string) {
	if !strings.Contains(s, "${") {
		return s, 0, nil, ""
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			break
		}
		if i > 0 && s[i-1] == '$' {
			// "$${" escapes a literal "${".
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "${env:"):
			end := strings.IndexByte(s, '}')
			if end < 0 {
				return "", refs, missing, "unterminated ${env:...} reference"
			}
			name := s[len("${env:"):end]
			if !envNameRe.MatchString(name) {
				return "", refs, missing, "invalid ${env:NAME} reference: NAME takes letters, digits and _ and does not start with a digit"
			}
			refs++
			v, ok := lookup(name)
			if !ok {
				missing = append(missing, name)
			}
			b.WriteString(v)
			s = s[end+1:]
		case strings.HasPrefix(s, "${file:"):
			return "", refs, missing, "a ${file:PATH} reference is only accepted as the whole value of a secret"
		case strings.HasPrefix(s, "${cred:"):
			return "", refs, missing, "a ${cred:NAME} reference is only accepted as the whole value of a secret"
		case bare && bareRefRe.MatchString(s):
			return "", refs, missing, bareRefFix(bareRefRe.FindStringSubmatch(s)[1])
		default:
			b.WriteString("${")
			s = s[2:]
		}
	}
	return b.String(), refs, missing, ""
}

// bareRefRe matches a ${NAME} at the start of the text: a shell-style
// variable, which plantgate does not expand.
var bareRefRe = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// shellVarRe matches a secret that is a whole $NAME in capitals: a shell
// variable written without braces, never a real secret.
var shellVarRe = regexp.MustCompile(`^\$([A-Z_][A-Z0-9_]*)$`)

// bareRefFix says how to write what ${name} meant.
func bareRefFix(name string) string {
	return fmt.Sprintf("${%s} is not expanded: write ${env:%s} for the environment variable (or $${%s} for the text itself)", name, name, name)
}

// fileRefRe matches a whole-value ${file:PATH} reference.
var fileRefRe = regexp.MustCompile(`^\$\{file:([^}]+)\}$`)

// resolveSecret turns the text of a secret field into its value. It
// returns literal=true when the text holds no reference at all. Messages
// name references and variables, never values.
func resolveSecret(raw string, opts *Options) (val string, literal bool, msgs []string) {
	s := strings.TrimSpace(raw)
	if m := credRefRe.FindStringSubmatch(s); m != nil {
		v, msgs := resolveCred(m[1], opts)
		return v, false, msgs
	}
	if m := fileRefRe.FindStringSubmatch(s); m != nil {
		path := m[1]
		b, err := opts.ReadFile(path)
		if err != nil {
			return "", false, []string{fmt.Sprintf("cannot read ${file:%s}: %s", path, fileErrText(err))}
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", false, []string{fmt.Sprintf("${file:%s} is empty", path)}
		}
		return v, false, nil
	}
	// A secret that is a whole ${NAME} was meant as a reference; inside a
	// longer literal, ${...} may be part of the secret, whose text must
	// not reach a message.
	if m := bareRefRe.FindStringSubmatch(s); m != nil && len(m[0]) == len(s) {
		return "", false, []string{bareRefFix(m[1])}
	}
	if m := shellVarRe.FindStringSubmatch(s); m != nil {
		return "", false, []string{fmt.Sprintf("$%s is not expanded: write ${env:%s} for the environment variable", m[1], m[1])}
	}
	v, refs, missing, bad := expandEnv(raw, opts.Env, false)
	if bad != "" {
		return "", false, []string{bad}
	}
	for _, name := range missing {
		msgs = append(msgs, fmt.Sprintf("environment variable %s is not set", name))
	}
	if len(msgs) > 0 {
		return "", false, msgs
	}
	if refs == 0 {
		return v, true, nil
	}
	if strings.TrimSpace(v) == "" {
		return "", false, []string{"secret is empty after expanding " + envRefs(raw)}
	}
	return v, false, nil
}

// envRefs lists the ${env:NAME} references in s, for messages.
func envRefs(s string) string {
	var refs []string
	for {
		i := strings.Index(s, "${env:")
		if i < 0 {
			break
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			break
		}
		refs = append(refs, s[i:i+end+1])
		s = s[i+end+1:]
	}
	return strings.Join(refs, ", ")
}

// fileErrText is err without the path that *fs.PathError repeats.
func fileErrText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
