package foemu

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/plantgate/plantgate/internal/logging"
)

// Claims are the claims of an access token the emulator issues. They follow
// Microsoft Entra ID app-only tokens.
type Claims struct {
	Aud   string `json:"aud"`   // audience: the resource of the scope
	Iss   string `json:"iss"`   // issuer: <base>/<tenant>/v2.0
	Iat   int64  `json:"iat"`   // issued at (Unix seconds)
	Nbf   int64  `json:"nbf"`   // not before
	Exp   int64  `json:"exp"`   // expiry
	AppID string `json:"appid"` // client ID (v1 claim name)
	Azp   string `json:"azp"`   // client ID (v2 claim name)
	Tid   string `json:"tid"`   // tenant ID from the token URL
	Oid   string `json:"oid"`   // object ID of the service principal, stable per client
	Sub   string `json:"sub"`   // subject, same as Oid
	Idtyp string `json:"idtyp"` // "app" for client credentials
	Ver   string `json:"ver"`   // token version
	Jti   string `json:"jti"`   // unique token ID
}

// Claims are jwt.Claims, so golang-jwt signs and checks them.
var _ jwt.Claims = Claims{}

func numericDate(unix int64) (*jwt.NumericDate, error) {
	if unix == 0 {
		return nil, nil
	}
	return jwt.NewNumericDate(time.Unix(unix, 0)), nil
}

// GetExpirationTime implements jwt.Claims.
func (c Claims) GetExpirationTime() (*jwt.NumericDate, error) { return numericDate(c.Exp) }

// GetIssuedAt implements jwt.Claims.
func (c Claims) GetIssuedAt() (*jwt.NumericDate, error) { return numericDate(c.Iat) }

// GetNotBefore implements jwt.Claims.
func (c Claims) GetNotBefore() (*jwt.NumericDate, error) { return numericDate(c.Nbf) }

// GetIssuer implements jwt.Claims.
func (c Claims) GetIssuer() (string, error) { return c.Iss, nil }

// GetSubject implements jwt.Claims.
func (c Claims) GetSubject() (string, error) { return c.Sub, nil }

// GetAudience implements jwt.Claims.
func (c Claims) GetAudience() (jwt.ClaimStrings, error) { return jwt.ClaimStrings{c.Aud}, nil }

// Token errors, reported in logs (the 401 itself carries no body, as F&O).
var (
	errTokenMissing  = errors.New("no bearer token")
	errTokenMalform  = errors.New("malformed token")
	errTokenSig      = errors.New("token signature invalid (issued by another emulator process?)")
	errTokenExpired  = errors.New("token expired")
	errTokenAudience = errors.New("token audience is not the environment URL")
	errTokenTenant   = errors.New("token tenant is not the environment's tenant")
	errTokenClient   = errors.New("token client is not registered")
)

// serveDiscovery answers the OpenID configuration MSAL reads before asking
// for a token. The issuer carries the emulator's own scheme and host, which
// MSAL checks against the authority.
func (e *Emulator) serveDiscovery(w http.ResponseWriter, r *http.Request, tenant string) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeAADError(w, http.StatusMethodNotAllowed, "invalid_request", 900561, "The endpoint only accepts GET requests.")
		return
	}
	if !e.tenantOK(tenant) {
		writeAADError(w, http.StatusBadRequest, "invalid_tenant", 90002, fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
		return
	}
	if strings.HasSuffix(r.URL.Path, "/keys") {
		// Tokens are HMAC-signed with a per-process key, which is not
		// published: resources check tokens by calling the emulator.
		writeJSON(w, http.StatusOK, map[string]any{"keys": []any{}})
		return
	}
	base := e.baseURL + "/" + tenant
	v1 := !strings.Contains(r.URL.Path, "/v2.0/")
	doc := map[string]any{
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"issuer":                                base + "/v2.0",
		"jwks_uri":                              base + "/discovery/v2.0/keys",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"tenant_region_scope":                   "EU",
		"cloud_instance_name":                   "fo-emulator",
	}
	if v1 {
		doc["token_endpoint"] = base + "/oauth2/token"
		doc["authorization_endpoint"] = base + "/oauth2/authorize"
		doc["issuer"] = base + "/"
	}
	writeJSON(w, http.StatusOK, doc)
}

func (e *Emulator) tenantOK(tenant string) bool {
	t := e.cfg.Identity.TenantID
	return t == "" || strings.EqualFold(t, tenant)
}

// serveToken implements the client credentials grant of the v2.0 endpoint
// (scope=<resource>/.default) and of the v1 endpoint (resource=<resource>).
// Secrets are checked; certificate assertions are accepted without
// checking their signature.
func (e *Emulator) serveToken(w http.ResponseWriter, r *http.Request, tenant string) {
	v1 := strings.HasSuffix(r.URL.Path, "/oauth2/token")
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeAADError(w, http.StatusMethodNotAllowed, "invalid_request", 900561, "The endpoint only accepts POST, OPTIONS requests. Received a "+r.Method+" request.")
		return
	}
	if !e.tenantOK(tenant) {
		writeAADError(w, http.StatusBadRequest, "invalid_request", 90002, fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		writeAADError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		writeAADError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body could not be parsed as a form.")
		return
	}
	f := r.PostForm
	grant := f.Get("grant_type")
	switch {
	case grant == "":
		writeAADError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	case grant != "client_credentials":
		writeAADError(w, http.StatusBadRequest, "unsupported_grant_type", 70003, "The app requested an unsupported grant type '"+grant+"'. The emulator supports client_credentials only.")
		return
	}
	clientID := f.Get("client_id")
	secret, assertion := f.Get("client_secret"), f.Get("client_assertion")
	if user, pass, ok := r.BasicAuth(); ok && secret == "" {
		clientID, secret = user, pass
	}
	if assertion != "" && clientID == "" {
		clientID = assertionSubject(assertion)
	}
	if clientID == "" {
		writeAADError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	}
	cl := e.client(clientID)
	if cl == nil {
		writeAADError(w, http.StatusBadRequest, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", clientID, tenant))
		return
	}
	switch {
	case secret != "":
		if !secretOK(cl.Secrets, secret) {
			e.log.Warn().Str(logging.FieldClientID, clientID).Str(logging.FieldReason, "wrong client secret").Msg("token request rejected")
			writeAADError(w, http.StatusBadRequest, "invalid_client", 7000215, fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", clientID))
			return
		}
	case assertion != "":
		if f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			writeAADError(w, http.StatusBadRequest, "invalid_request", 90014, "The request body must contain the following parameter: 'client_assertion_type'.")
			return
		}
		if !*cl.AllowAssertion {
			writeAADError(w, http.StatusBadRequest, "invalid_client", 700027, "Client assertion failed signature validation: the application does not accept certificate credentials.")
			return
		}
		if sub := assertionSubject(assertion); sub == "" {
			writeAADError(w, http.StatusBadRequest, "invalid_client", 50027, "JWT token is invalid or malformed.")
			return
		} else if !strings.EqualFold(sub, clientID) {
			writeAADError(w, http.StatusBadRequest, "invalid_client", 700021, "Client assertion application identifier doesn't match 'client_id' parameter.")
			return
		}
		e.log.Debug().Str(logging.FieldClientID, clientID).Msg("client assertion accepted without signature check")
	default:
		writeAADError(w, http.StatusBadRequest, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return
	}
	var resource string
	if v1 {
		resource = f.Get("resource")
		if resource == "" {
			writeAADError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'resource'.")
			return
		}
	} else {
		scope := strings.TrimSpace(f.Get("scope"))
		var scopes []string
		for _, s := range strings.Fields(scope) {
			if s != "openid" && s != "profile" && s != "offline_access" {
				scopes = append(scopes, s)
			}
		}
		if len(scopes) != 1 || !strings.HasSuffix(scopes[0], "/.default") {
			writeAADError(w, http.StatusBadRequest, "invalid_scope", 70011, fmt.Sprintf("The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", scope))
			return
		}
		resource = strings.TrimSuffix(scopes[0], "/.default")
	}
	lifetime := e.cfg.Identity.TokenLifetime.D()
	tok, err := e.IssueToken(cl.ClientID, tenant, resource, lifetime)
	if err != nil {
		writeAADError(w, http.StatusInternalServerError, "server_error", 50000, "There was an error issuing a token.")
		return
	}
	expires := int64(lifetime/time.Second) - 1
	if expires < 0 {
		expires = 0
	}
	body := map[string]any{"token_type": "Bearer", "expires_in": expires, "ext_expires_in": expires, "access_token": tok}
	if v1 {
		now := time.Now().Unix()
		body = map[string]any{
			"token_type": "Bearer", "expires_in": strconv.FormatInt(expires, 10), "ext_expires_in": strconv.FormatInt(expires, 10),
			"expires_on": strconv.FormatInt(now+expires, 10), "not_before": strconv.FormatInt(now, 10),
			"resource": resource, "access_token": tok,
		}
	}
	w.Header().Set("Cache-Control", "no-store, no-cache")
	w.Header().Set("Pragma", "no-cache")
	e.log.Debug().Str(logging.FieldClientID, cl.ClientID).Str(logging.FieldTenant, tenant).Str(logging.FieldURL, resource).Msg("token issued")
	writeJSON(w, http.StatusOK, body)
}

// IssueToken signs an access token for a configured client, as the token
// endpoint would. Tests use it to build expired tokens (negative lifetime)
// or tokens for another audience.
func (e *Emulator) IssueToken(clientID, tenant, audience string, lifetime time.Duration) (string, error) {
	cl := e.client(clientID)
	if cl == nil {
		return "", fmt.Errorf("%w: %s", ErrUnknownClient, clientID)
	}
	if tenant == "" {
		tenant = e.cfg.Identity.TenantID
	}
	now := time.Now()
	jti := make([]byte, 12)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	oid := stableGUID("oid:" + strings.ToLower(cl.ClientID))
	c := Claims{
		Aud: audience, Iss: e.baseURL + "/" + tenant + "/v2.0",
		Iat: now.Unix(), Nbf: now.Unix() - 1, Exp: now.Add(lifetime).Unix(),
		AppID: cl.ClientID, Azp: cl.ClientID, Tid: tenant, Oid: oid, Sub: oid,
		Idtyp: "app", Ver: "2.0", Jti: base64.RawURLEncoding.EncodeToString(jti),
	}
	return e.signToken(c)
}

// signToken signs c with the emulator's per-process HMAC key (HS256).
func (e *Emulator) signToken(c Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	t.Header["kid"] = "fo-emulator"
	return t.SignedString(e.signKey)
}

// verifyToken checks a bearer token as F&O does: signature, lifetime,
// audience (exactly the environment URL: lower case, no trailing slash),
// tenant and registered client.
func (e *Emulator) verifyToken(tok string) (*Claims, *ClientConfig, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return e.signKey, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithExpirationRequired())
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenNotValidYet):
		return &c, nil, errTokenExpired
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, nil, errTokenMalform
	default: // a wrong signature or another signing method
		return nil, nil, errTokenSig
	}
	if c.Aud != e.baseURL {
		return &c, nil, fmt.Errorf("%w: got %q, want %q", errTokenAudience, c.Aud, e.baseURL)
	}
	if !e.tenantOK(c.Tid) {
		return &c, nil, errTokenTenant
	}
	cl := e.client(c.AppID)
	if cl == nil {
		return &c, nil, errTokenClient
	}
	return &c, cl, nil
}

// authenticate checks the bearer token of an F&O call and answers 401 when
// it is missing or invalid. F&O's 401 has an empty body.
func (e *Emulator) authenticate(w http.ResponseWriter, r *http.Request) (*ClientConfig, bool) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		tok, ok = strings.CutPrefix(h, "bearer ")
	}
	var err error
	var cl *ClientConfig
	if !ok || strings.TrimSpace(tok) == "" {
		err = errTokenMissing
	} else {
		_, cl, err = e.verifyToken(strings.TrimSpace(tok))
	}
	if err != nil {
		e.log.Info().Str(logging.FieldPath, r.URL.Path).Str(logging.FieldReason, err.Error()).Msg("request unauthorized")
		desc := "The access token is missing or invalid"
		if errors.Is(err, errTokenExpired) {
			desc = "The access token has expired"
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer error="invalid_token", error_description=%q`, desc))
		w.WriteHeader(http.StatusUnauthorized)
		return nil, false
	}
	return cl, true
}

// client returns the configured client with this ID (ignoring case), or nil.
func (e *Emulator) client(id string) *ClientConfig {
	for i := range e.cfg.Identity.Clients {
		if strings.EqualFold(e.cfg.Identity.Clients[i].ClientID, id) {
			return &e.cfg.Identity.Clients[i]
		}
	}
	return nil
}

func secretOK(secrets []string, got string) bool {
	ok := false
	for _, s := range secrets {
		if subtle.ConstantTimeCompare([]byte(s), []byte(got)) == 1 {
			ok = true
		}
	}
	return ok
}

// assertionSubject returns the sub (or iss) claim of a client assertion
// JWT without checking its signature, or "" if it does not parse.
func assertionSubject(a string) string {
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser(jwt.WithPaddingAllowed()).ParseUnverified(a, &c); err != nil {
		return ""
	}
	if c.Subject != "" {
		return c.Subject
	}
	return c.Issuer
}

// writeAADError writes an error in the shape of Microsoft Entra ID.
func writeAADError(w http.ResponseWriter, status int, code string, aadsts int, desc string) {
	trace, corr := randomGUID(), randomGUID()
	ts := time.Now().UTC().Format("2006-01-02 15:04:05Z")
	full := fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s", aadsts, desc, trace, corr, ts)
	writeJSON(w, status, map[string]any{
		"error":             code,
		"error_description": full,
		"error_codes":       []int{aadsts},
		"timestamp":         ts,
		"trace_id":          trace,
		"correlation_id":    corr,
		"error_uri":         fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", aadsts),
	})
}

// randomGUID returns a random GUID in lower case.
func randomGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatGUID(b[:])
}

// stableGUID derives a GUID from a string, for object IDs that stay the
// same across restarts.
func stableGUID(s string) string {
	h := sha256.Sum256([]byte(s))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return formatGUID(h[:16])
}

func formatGUID(b []byte) string {
	x := hex.EncodeToString(b)
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}
