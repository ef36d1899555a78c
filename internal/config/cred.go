package config

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
)

// A ${cred:NAME} secret reference reads the systemd credential NAME: the
// file NAME in the directory $CREDENTIALS_DIRECTORY, which systemd sets for
// every command of a unit that has LoadCredential=NAME:PATH (for
// plantgate.service, /run/credentials/plantgate.service). Outside systemd
// the variable may be set by hand to the directory holding the files, so
// that check-config can read the same secrets the service will.

// credDirEnv is the variable systemd sets to the unit's credentials.
const credDirEnv = "CREDENTIALS_DIRECTORY"

// credRefRe matches a whole-value ${cred:NAME} reference.
var credRefRe = regexp.MustCompile(`^\$\{cred:([^}]*)\}$`)

// credNameRe is what a credential name may be: a plain file name (systemd
// refuses names with "/", and "." or ".." would leave the directory).
var credNameRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$`)

// resolveCred reads the credential name through opts. Messages name the
// reference and the directory, never the value.
func resolveCred(name string, opts *Options) (string, []string) {
	ref := "${cred:" + name + "}"
	if !credNameRe.MatchString(name) {
		return "", []string{fmt.Sprintf("invalid %s reference: NAME is a credential name of letters, digits, '_', '.' and '-' (as in LoadCredential=NAME:PATH)", ref)}
	}
	dir, ok := opts.Env(credDirEnv)
	if !ok || dir == "" {
		return "", []string{fmt.Sprintf("cannot read %s: %s is not set; systemd sets it for a unit with LoadCredential=%s:PATH, "+
			"elsewhere set it to the directory holding the file %s", ref, credDirEnv, name, name)}
	}
	b, err := opts.ReadFile(filepath.Join(dir, name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", []string{fmt.Sprintf("cannot read %s: no file %s in %s=%s; add LoadCredential=%s:PATH to the unit", ref, name, credDirEnv, dir, name)}
		}
		return "", []string{fmt.Sprintf("cannot read %s from %s=%s: %s", ref, credDirEnv, dir, fileErrText(err))}
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", []string{fmt.Sprintf("%s is empty (%s/%s)", ref, dir, name)}
	}
	return v, nil
}
