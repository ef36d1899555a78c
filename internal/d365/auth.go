package d365

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"

	"github.com/plantgate/plantgate/internal/logging"
)

// renewBefore is how long before its expiry a token is renewed. MSAL does
// not serve a token from its cache in its last five minutes either.
const renewBefore = 5 * time.Minute

// microsoftAuthorities are the identity platform hosts MSAL's instance
// discovery knows; any other authority (fo-emulator, a private cloud) is
// used with instance discovery off.
var microsoftAuthorities = map[string]bool{
	"login.microsoftonline.com": true, "login.microsoft.com": true, "login.windows.net": true,
	"sts.windows.net": true, "login.microsoftonline.us": true, "login.chinacloudapi.cn": true,
	"login.partner.microsoftonline.cn": true, "login.microsoftonline.de": true,
}

// Credentials are an app registration's client secret, or its certificate
// and private key (PEM files).
type Credentials struct {
	ClientID        string
	ClientSecret    logging.Secret
	CertificateFile string
	PrivateKeyFile  string
}

// TokenSource obtains app-only access tokens for one F&O environment with
// MSAL's confidential client (client credentials grant, scope
// "<environment URL>/.default"). Tokens are cached and renewed five
// minutes before they expire; Invalidate forces a new one after F&O
// answered 401. It is safe for concurrent use.
type TokenSource struct {
	authority string
	clientID  string
	scope     string
	cred      confidential.Credential
	hc        *http.Client
	discovery bool
	now       func() time.Time
	onRefresh func(reason string, err error)

	// Lock order: mu, then fast.
	mu      sync.Mutex // serialises token requests; guards client
	client  confidential.Client
	fast    sync.RWMutex // guards tok and expires for the fast path
	tok     string
	expires time.Time
}

// NewTokenSource builds a token source. authorityURL is the identity
// platform (https://login.microsoftonline.com, or fo-emulator's URL), the
// tenant is appended. It reads the certificate files but does no network
// I/O.
func NewTokenSource(authorityURL, tenantID, environmentURL string, c Credentials, hc *http.Client) (*TokenSource, error) {
	au, err := url.Parse(strings.TrimRight(authorityURL, "/"))
	if err != nil || au.Host == "" {
		return nil, fmt.Errorf("parse authority_url %q: want an absolute https URL", authorityURL)
	}
	if au.Scheme != "https" {
		return nil, fmt.Errorf("authority_url %q: the identity platform must be reached over https", authorityURL)
	}
	if tenantID == "" {
		return nil, errors.New("tenant_id is empty")
	}
	var cred confidential.Credential
	switch {
	case !c.ClientSecret.IsZero():
		cred, err = confidential.NewCredFromSecret(c.ClientSecret.Reveal())
	case c.CertificateFile != "" && c.PrivateKeyFile != "":
		cred, err = certCredential(c.CertificateFile, c.PrivateKeyFile)
	default:
		err = errors.New("no credentials: set client_secret, or certificate_file and private_key_file")
	}
	if err != nil {
		return nil, err
	}
	ts := &TokenSource{
		authority: au.String() + "/" + url.PathEscape(tenantID),
		clientID:  c.ClientID,
		scope:     strings.TrimRight(environmentURL, "/") + "/.default",
		cred:      cred,
		hc:        hc,
		discovery: microsoftAuthorities[strings.ToLower(au.Hostname())],
		now:       time.Now,
	}
	if ts.client, err = ts.newClient(); err != nil {
		return nil, err
	}
	return ts, nil
}

func certCredential(certFile, keyFile string) (confidential.Credential, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return confidential.Credential{}, fmt.Errorf("read certificate_file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return confidential.Credential{}, fmt.Errorf("read private_key_file: %w", err)
	}
	pem := append(append(append([]byte(nil), certPEM...), '\n'), keyPEM...)
	certs, key, err := confidential.CertFromPEM(pem, "")
	if err != nil {
		return confidential.Credential{}, fmt.Errorf("load certificate_file and private_key_file: %w", err)
	}
	cred, err := confidential.NewCredFromCert(certs, key)
	if err != nil {
		return confidential.Credential{}, fmt.Errorf("load certificate_file and private_key_file: %w", err)
	}
	return cred, nil
}

func (ts *TokenSource) newClient() (confidential.Client, error) {
	opts := []confidential.Option{confidential.WithInstanceDiscovery(ts.discovery)}
	if ts.hc != nil {
		opts = append(opts, confidential.WithHTTPClient(ts.hc))
	}
	c, err := confidential.New(ts.authority, ts.clientID, ts.cred, opts...)
	if err != nil {
		return confidential.Client{}, fmt.Errorf("build identity client for %s: %w", ts.authority, err)
	}
	return c, nil
}

// Scope returns the scope tokens are requested for.
func (ts *TokenSource) Scope() string { return ts.scope }

// Token returns a valid access token, from the cache while it has more than
// five minutes left. Errors wrap ErrToken and an *Error describing the
// identity platform's answer; they never contain a secret or a token.
func (ts *TokenSource) Token(ctx context.Context) (string, error) {
	now := ts.now()
	ts.fast.RLock()
	tok, exp := ts.tok, ts.expires
	ts.fast.RUnlock()
	if tok != "" && exp.Sub(now) > renewBefore {
		return tok, nil
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.fast.RLock()
	tok, exp = ts.tok, ts.expires
	ts.fast.RUnlock()
	if tok != "" && exp.Sub(now) > renewBefore {
		return tok, nil // another caller renewed it meanwhile
	}
	reason := "expiry"
	if tok == "" {
		reason = "initial"
	}
	res, err := ts.client.AcquireTokenByCredential(ctx, []string{ts.scope})
	if err != nil {
		err = tokenError(ts.authority, err)
		if ts.onRefresh != nil {
			ts.onRefresh(reason, err)
		}
		return "", err
	}
	if res.AccessToken == "" {
		err := &Error{Op: "acquire token from " + ts.authority, Message: "the identity platform answered without an access token", Err: ErrToken}
		if ts.onRefresh != nil {
			ts.onRefresh(reason, err)
		}
		return "", err
	}
	if res.AccessToken != tok && ts.onRefresh != nil {
		ts.onRefresh(reason, nil)
	}
	ts.fast.Lock()
	ts.tok, ts.expires = res.AccessToken, res.ExpiresOn
	ts.fast.Unlock()
	return res.AccessToken, nil
}

// Invalidate drops tok after F&O rejected it (401), so the next Token call
// asks the identity platform for a new one. Calls for a token that was
// already replaced do nothing, so concurrent 401s renew it once.
func (ts *TokenSource) Invalidate(tok string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.fast.Lock()
	defer ts.fast.Unlock()
	if ts.tok != tok || tok == "" {
		return
	}
	ts.tok, ts.expires = "", time.Time{}
	// MSAL would serve the rejected token from its cache until it nears
	// expiry: start from an empty cache.
	if c, err := ts.newClient(); err == nil {
		ts.client = c
	}
}

// tokenError describes a failed token request precisely, without echoing
// the identity platform's raw answer (which could hold a token).
func tokenError(authority string, err error) error {
	e := &Error{Op: "acquire token from " + authority, Err: ErrToken}
	var ce msalerrors.CallErr
	var je msalerrors.InvalidJsonErr
	switch {
	case errors.As(err, &ce) && ce.Resp != nil:
		e.Status = ce.Resp.StatusCode
		body := ce.Err.Error()
		if i := strings.Index(body, ":\n"); i >= 0 {
			body = body[i+2:]
		} else {
			body = ""
		}
		e.Message = ErrorText(ce.Resp.Header.Get("Content-Type"), []byte(body))
		if oe, ok := ParseODataError([]byte(body)); ok {
			e.Code = oe.Code
		}
		if e.Message == "" {
			e.Message = "the identity platform answered without a body"
		}
	case errors.As(err, &je):
		msg := je.Error()
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		e.Message = "the identity platform answered with a body that is not a token response (" + clip(msg) + ")"
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		e.Message = "no answer from the identity platform: " + err.Error()
		e.Err = errors.Join(ErrToken, err)
	default:
		e.Message = clip(strings.ReplaceAll(err.Error(), "\n", " "))
		e.Err = errors.Join(ErrToken, err)
	}
	return e
}

// tokenConnectivity reports whether a token failure means the identity
// platform is unreachable or broken (counted by the circuit breaker), as
// opposed to a configuration problem it answered clearly (4xx).
func tokenConnectivity(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return true
	}
	return e.Status == 0 || e.Status >= 500 || e.Status == http.StatusOK || e.Status == http.StatusTooManyRequests
}
