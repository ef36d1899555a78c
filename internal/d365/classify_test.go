package d365

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/pipeline"
)

const writeFailed = `{"error":{"code":"","message":"An error has occurred.","innererror":{"message":"Write failed for table row of type 'CustCustomerV3Entity'. Infolog: Warning: validateField failed on field 'CustCustomerV3Entity.CustomerGroupId'.","type":"Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException","stacktrace":"   at ..."}}}`

func TestParseODataError(t *testing.T) {
	for _, tc := range []struct {
		name, body, want, code string
		ok                     bool
	}{
		{"inner message", writeFailed, "Write failed for table row of type 'CustCustomerV3Entity'. Infolog: Warning: validateField failed on field 'CustCustomerV3Entity.CustomerGroupId'.", "", true},
		{"outer message only", `{"error":{"code":"","message":"Resource not found for the segment 'Nope'."}}`, "Resource not found for the segment 'Nope'.", "", true},
		{"odata v3 message", `{"error":{"code":"X1","message":{"lang":"en-US","value":"old style"}}}`, "old style", "X1", true},
		{"json service", `{"Message":"An exception occurred when invoking the operation - Company 'XX' does not exist.","ExceptionType":"ErrorException","ExceptionMessage":"An exception occurred when invoking the operation - Company 'XX' does not exist."}`, "An exception occurred when invoking the operation - Company 'XX' does not exist.", "", true},
		{"identity platform", `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}`, "AADSTS7000215: Invalid client secret provided.", "invalid_client", true},
		{"not json", `<html><title>502</title></html>`, "", "", false},
		{"empty object", `{}`, "", "", false},
		{"other json", `{"value":[]}`, "", "", false},
		{"error is a number", `{"error":5}`, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseODataError([]byte(tc.body))
			if ok != tc.ok || got.Text() != tc.want || got.Code != tc.code {
				t.Errorf("ParseODataError = %+v, %v; want text %q code %q, %v", got, ok, tc.want, tc.code, tc.ok)
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	proxy := `<!DOCTYPE html><html><head><title>502 Bad Gateway</title><style>body{x}</style></head>
<body><h1>Bad Gateway</h1><p>The proxy server received an invalid response from an upstream server.</p></body></html>`
	for _, tc := range []struct {
		name, ct, body, want string
	}{
		{"odata", "application/json", writeFailed, "Write failed for table row of type 'CustCustomerV3Entity'."},
		{"proxy html", "text/html", proxy, "an HTML page instead of JSON (a proxy or gateway answered?): 502 Bad Gateway: Bad Gateway The proxy server received an invalid response from an upstream server."},
		{"html without content type", "", proxy, "502 Bad Gateway"},
		{"plain text", "text/plain", "upstream connect error\n or disconnect", "upstream connect error or disconnect"},
		{"xml", "application/xml", "<a>b</a>", "application/xml body: <a>b</a>"},
		{"empty", "", "", ""},
		{"binary", "", "\xff\xfe\x00\x01", "a binary body of 4 bytes"},
		{"secret in text", "text/plain", "failed: client_secret=hunter2&x=1", "client_secret=[REDACTED]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ErrorText(tc.ct, []byte(tc.body))
			if !strings.Contains(got, tc.want) || (tc.want == "" && got != "") {
				t.Errorf("ErrorText = %q, want it to contain %q", got, tc.want)
			}
			if strings.Contains(got, "hunter2") {
				t.Errorf("ErrorText leaked a secret: %q", got)
			}
		})
	}
	long := ErrorText("text/plain", []byte(strings.Repeat("é", 2000)))
	if len(long) > MaxReasonBytes+len("…") || !strings.HasSuffix(long, "…") {
		t.Errorf("long body: %d bytes, want at most %d and a trailing ellipsis", len(long), MaxReasonBytes)
	}
}

func TestClassify(t *testing.T) {
	now := time.Date(2025, 3, 3, 12, 0, 0, 0, time.UTC)
	ra := func(v string) http.Header { return http.Header{"Retry-After": {v}} }
	for _, tc := range []struct {
		name     string
		status   int
		h        http.Header
		body     string
		kind     string // ok, permanent, throttle, transient
		after    time.Duration
		contains string
	}{
		{"created", 201, nil, "", "ok", 0, ""},
		{"no content", 204, nil, "", "ok", 0, ""},
		{"bad request", 400, nil, writeFailed, "permanent", 0, "Write failed for table row"},
		{"not found", 404, nil, `{"error":{"code":"","message":"No resource was found"}}`, "permanent", 0, "No resource was found"},
		{"conflict", 409, nil, "", "permanent", 0, "409 Conflict"},
		{"unprocessable", 422, nil, "", "permanent", 0, "422"},
		{"forbidden", 403, nil, "", "permanent", 0, "403 Forbidden"},
		{"unauthorized", 401, nil, "", "transient", 0, "401"},
		{"request timeout", 408, nil, "", "transient", 0, "408"},
		{"throttled", 429, ra("7"), `{"error":{"message":"Number of requests exceeded the limit of 6000 over the time window of 300 seconds."}}`, "throttle", 7 * time.Second, "Number of requests exceeded"},
		{"throttled without retry-after", 429, nil, "", "throttle", DefaultRetryAfter, "429"},
		{"throttled http date", 429, ra(now.Add(90 * time.Second).Format(http.TimeFormat)), "", "throttle", 90 * time.Second, "429"},
		{"throttled huge", 429, ra("100000"), "", "throttle", 5 * time.Minute, "429"},
		{"unavailable with retry-after", 503, ra("3"), "", "throttle", 3 * time.Second, "503"},
		{"unavailable", 503, nil, "", "transient", 0, "503"},
		{"server error", 500, nil, `{"error":{"message":"boom"}}`, "transient", 0, "boom"},
		{"write failure in batch", 500, nil, writeFailed, "permanent", 0, "Write failed"},
		{"bad gateway html", 502, http.Header{"Content-Type": {"text/html"}}, "<html><title>502 Bad Gateway</title></html>", "transient", 0, "502 Bad Gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Classify("POST /data/X", tc.status, tc.h, []byte(tc.body), now)
			var te *pipeline.ThrottleError
			kind := "transient"
			switch {
			case err == nil:
				kind = "ok"
			case pipeline.IsPermanent(err):
				kind = "permanent"
			case errors.As(err, &te):
				kind = "throttle"
			}
			if kind != tc.kind {
				t.Fatalf("Classify(%d) = %v (%s), want %s", tc.status, err, kind, tc.kind)
			}
			if err == nil {
				return
			}
			if te != nil && te.After != tc.after {
				t.Errorf("throttle after %v, want %v", te.After, tc.after)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("error %q lacks %q", err, tc.contains)
			}
			if StatusOf(err) != tc.status {
				t.Errorf("StatusOf = %d, want %d", StatusOf(err), tc.status)
			}
		})
	}
}

func TestIsDuplicate(t *testing.T) {
	dup := `{"error":{"code":"","message":"An error has occurred.","innererror":{"message":"Write failed for table row of type 'ProdProductionOrderHeaderEntity'. Infolog: Error: Cannot create a record in Production orders (ProdTable). Production: P000101. The record already exists.","type":"Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException"}}}`
	now := time.Now()
	if !IsDuplicate(Classify("POST", 400, nil, []byte(dup), now)) {
		t.Error("400 record already exists: not a duplicate")
	}
	if !IsDuplicate(Classify("POST", 500, nil, []byte(dup), now)) {
		t.Error("500 (batch) record already exists: not a duplicate")
	}
	if !IsDuplicate(Classify("POST", 409, nil, nil, now)) {
		t.Error("409: not a duplicate")
	}
	if IsDuplicate(Classify("POST", 400, nil, []byte(writeFailed), now)) {
		t.Error("validation failure taken for a duplicate")
	}
}

func FuzzParseODataError(f *testing.F) {
	for _, s := range []string{writeFailed, `{"error":{"message":{"value":"x"}}}`, `{"error":"invalid_client","error_description":"d"}`,
		`{"Message":"m","ExceptionType":"t"}`, `<html>`, `{"error":{"innererror":null}}`, `{"error":[]}`, "", "{", `{"error":{"code":1}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		oe, ok := ParseODataError(b)
		if !ok && (oe != ODataError{}) {
			t.Fatalf("not ok but fields set: %+v", oe)
		}
		text := ErrorText("application/json", b)
		if len(text) > MaxReasonBytes+len("…") {
			t.Fatalf("ErrorText of %d bytes", len(text))
		}
		if strings.ContainsAny(text, "\n\r") {
			t.Fatalf("ErrorText spans lines: %q", text)
		}
		_ = Classify("POST /data/X", 400, nil, b, time.Now())
	})
}
