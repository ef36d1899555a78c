package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/config"
)

// credYAML puts ref into http.admin_token, at line 2, column 21.
func credYAML(ref string) string {
	return fmt.Sprintf("gateway: {id: g}\nhttp: {admin_token: %q}\nsources: {s: {type: file, path: /x}}\nsinks: {k: {type: recorder}}\nflows: {f: {from: s, to: k}}\n", ref)
}

// TestCredReference checks ${cred:NAME}: the file NAME in
// $CREDENTIALS_DIRECTORY, as systemd's LoadCredential= provides it, and an
// error naming file:line, field and reference (never the value) when the
// variable is unset, the file is missing or empty, or the name is bad.
func TestCredReference(t *testing.T) {
	dir := t.TempDir()
	const value = "cred-t0ken-value"
	if err := os.WriteFile(filepath.Join(dir, "admin-token"), []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		ref     string
		credDir string // "" leaves CREDENTIALS_DIRECTORY unset
		want    string
		wantErr string
	}{
		{"read", "${cred:admin-token}", dir, value, ""},
		{"spaces around", " ${cred:admin-token} ", dir, value, ""},
		{
			"directory unset", "${cred:admin-token}", "", "",
			"x.yaml:2:21: http.admin_token: cannot read ${cred:admin-token}: CREDENTIALS_DIRECTORY is not set; " +
				"systemd sets it for a unit with LoadCredential=admin-token:PATH, elsewhere set it to the directory holding the file admin-token",
		},
		{
			"file missing", "${cred:fo-client-secret}", dir, "",
			"x.yaml:2:21: http.admin_token: cannot read ${cred:fo-client-secret}: no file fo-client-secret in CREDENTIALS_DIRECTORY=" + dir +
				"; add LoadCredential=fo-client-secret:PATH to the unit",
		},
		{"file empty", "${cred:empty}", dir, "", "x.yaml:2:21: http.admin_token: ${cred:empty} is empty (" + dir + "/empty)"},
		{"not a file", "${cred:adir}", dir, "", "x.yaml:2:21: http.admin_token: cannot read ${cred:adir} from CREDENTIALS_DIRECTORY=" + dir + ": is a directory"},
		{
			"path as name", "${cred:../admin-token}", dir, "",
			"x.yaml:2:21: http.admin_token: invalid ${cred:../admin-token} reference: NAME is a credential name of letters, digits, '_', '.' and '-' (as in LoadCredential=NAME:PATH)",
		},
		{
			"empty name", "${cred:}", dir, "",
			"x.yaml:2:21: http.admin_token: invalid ${cred:} reference: NAME is a credential name of letters, digits, '_', '.' and '-' (as in LoadCredential=NAME:PATH)",
		},
		{
			"part of a value", "x${cred:admin-token}", dir, "",
			"x.yaml:2:21: http.admin_token: a ${cred:NAME} reference is only accepted as the whole value of a secret",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions()
			opts.Env = func(name string) (string, bool) {
				if name == "CREDENTIALS_DIRECTORY" && tt.credDir != "" {
					return tt.credDir, true
				}
				v, ok := testEnv[name]
				return v, ok
			}
			c, err := config.Parse("x.yaml", []byte(credYAML(tt.ref)), opts)
			if tt.wantErr != "" {
				if got := fmt.Sprint(err); got != tt.wantErr {
					t.Errorf("got error\n%q, want\n%q", got, tt.wantErr)
				}
				if err != nil && strings.Contains(err.Error(), value) {
					t.Errorf("error contains the credential's value: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.HTTP.AdminToken.Reveal(); got != tt.want {
				t.Errorf("admin_token = %q, want %q", got, tt.want)
			}
			for _, w := range c.Warnings {
				if strings.Contains(w.Msg, "secret") {
					t.Errorf("warning about the secret: %v", w)
				}
			}
			out, err := c.Redacted()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(out), value) {
				t.Errorf("Redacted output contains the credential's value:\n%s", out)
			}
		})
	}
}

// TestCredInPlainString: a plain string does not take ${cred:...}.
func TestCredInPlainString(t *testing.T) {
	src := "gateway: {id: g}\nsources: {s: {type: file, path: \"${cred:x}\"}}\nsinks: {k: {type: recorder}}\nflows: {f: {from: s, to: k}}\n"
	_, err := config.Parse("x.yaml", []byte(src), testOptions())
	want := "x.yaml:2:33: sources.s.path: a ${cred:NAME} reference is only accepted as the whole value of a secret"
	if got := fmt.Sprint(err); got != want {
		t.Errorf("got error %q, want %q", got, want)
	}
}

// TestCredSkipSecrets: with SkipSecrets a ${cred:...} reference is kept as
// written and CREDENTIALS_DIRECTORY is not consulted.
func TestCredSkipSecrets(t *testing.T) {
	opts := testOptions()
	opts.SkipSecrets = true
	opts.Env = func(name string) (string, bool) {
		if name == "CREDENTIALS_DIRECTORY" {
			t.Errorf("SkipSecrets looked up %s", name)
		}
		return "", false
	}
	c, err := config.Parse("x.yaml", []byte(credYAML("${cred:admin-token}")), opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.HTTP.AdminToken.Reveal(); got != "${cred:admin-token}" {
		t.Errorf("admin_token = %q, want the reference as written", got)
	}
}
