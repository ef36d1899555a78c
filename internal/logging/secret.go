package logging

import (
	"encoding/json"
	"net/url"
	"regexp"
)

// Redacted is what a secret prints as.
const Redacted = "[REDACTED]"

// Secret holds a credential (client secret, token, password, SAS URL). Its
// String, GoString, MarshalJSON, MarshalText and MarshalZerologObject-free
// forms all print Redacted; only Reveal returns the value.
type Secret struct{ v string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{v: s} }

// Reveal returns the secret value. Call it only where the value is sent to
// its peer, never where it may be printed.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == "" }

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s.v == "" {
		return ""
	}
	return Redacted
}

// GoString implements fmt.GoStringer so %#v does not leak the value.
func (s Secret) GoString() string { return s.String() }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText implements encoding.TextMarshaler.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

var sigRe = regexp.MustCompile(`(?i)(sig|signature|client_secret|access_token|token|password|code)=([^&\s"']+)`)

// RedactURL returns u with its query parameter values that look like
// credentials (SAS sig, tokens) replaced, and any user info removed. It never
// fails: a string that does not parse is redacted wholesale by pattern.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return sigRe.ReplaceAllString(u, "$1="+Redacted)
	}
	if p.User != nil {
		p.User = url.User(Redacted)
	}
	if p.RawQuery != "" {
		p.RawQuery = sigRe.ReplaceAllString(p.RawQuery, "$1="+Redacted)
	}
	return p.String()
}

// RedactText replaces credential-looking key=value pairs in free text, such as
// an error message that embeds a URL.
func RedactText(s string) string { return sigRe.ReplaceAllString(s, "$1="+Redacted) }
