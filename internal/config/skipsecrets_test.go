package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/config"
)

const skipSecretsYAML = `gateway: {id: t, data_dir: /var/lib/plantgate-x}
http:
  admin_token: ${env:PG_SKIP_UNSET_TOKEN}
fo:
  prod:
    url: https://contoso.operations.dynamics.com
    tenant_id: 00000000-0000-0000-0000-0000000000aa
    client_id: plantgate
    client_secret: ${file:/run/credentials/plantgate.service/fo}
    company: USMF
sources: {in: {type: file, path: x}}
flows: {f: {from: in, to: out}}
sinks: {out: {type: recorder}}
`

// TestSkipSecrets: with SkipSecrets no secret reference is resolved (no
// variable or file is read for it) and the rest of the config is checked as
// usual; without it the unresolvable references are errors.
func TestSkipSecrets(t *testing.T) {
	var read []string
	opts := config.Options{
		Env: func(string) (string, bool) { return "", false },
		ReadFile: func(p string) ([]byte, error) {
			read = append(read, p)
			return nil, errors.New("permission denied")
		},
	}
	if _, err := config.Parse("x.yaml", []byte(skipSecretsYAML), opts); err == nil ||
		!strings.Contains(err.Error(), "PG_SKIP_UNSET_TOKEN") || !strings.Contains(err.Error(), "${file:/run/credentials/plantgate.service/fo}") {
		t.Fatalf("without SkipSecrets: err = %v, want both references named", err)
	}
	read = nil
	opts.SkipSecrets = true
	c, err := config.Parse("x.yaml", []byte(skipSecretsYAML), opts)
	if err != nil {
		t.Fatalf("with SkipSecrets: %v", err)
	}
	if len(read) != 0 {
		t.Errorf("SkipSecrets read %v", read)
	}
	if c.Gateway.DataDir != "/var/lib/plantgate-x" || c.FO["prod"].ClientID != "plantgate" {
		t.Errorf("config not decoded: data_dir %q", c.Gateway.DataDir)
	}
	if got := c.FO["prod"].ClientSecret.Reveal(); got != "${file:/run/credentials/plantgate.service/fo}" {
		t.Errorf("client_secret holds %q, want the reference as written", got)
	}
	for _, w := range c.Warnings {
		if strings.Contains(w.Msg, "secret") {
			t.Errorf("warning about a secret: %v", w)
		}
	}
	bad := strings.Replace(skipSecretsYAML, "company: USMF", "company: USMF\n    colour: blue", 1)
	if _, err := config.Parse("x.yaml", []byte(bad), opts); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Errorf("SkipSecrets hid another problem: %v", err)
	}
}
