package d365

import (
	"bytes"
	"encoding/json"
	"html"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// MaxReasonBytes bounds the text of F&O's answer kept in an error (and so
// in a dead letter's reason).
const MaxReasonBytes = 1000

// maxErrorBody bounds how much of an error answer is read for its text.
const maxErrorBody = 256 << 10

// DefaultRetryAfter is the wait after a 429 that carries no Retry-After.
const DefaultRetryAfter = 10 * time.Second

// maxRetryAfter caps a Retry-After; F&O's throttling window is 300 s.
const maxRetryAfter = 5 * time.Minute

// writeExceptionType is the innererror.type of F&O's entity write failures
// (validation, duplicate key). F&O answers them 400 on single calls and
// 500 inside $batch; both are permanent.
const writeExceptionType = "AxODataWriteException"

// ODataError is the error body F&O's OData service and JSON services
// answer:
//
//	{"error":{"code":"","message":"An error has occurred.",
//	  "innererror":{"message":"Write failed for table row ...","type":"...","stacktrace":"..."}}}
//
// JSON custom services (the MES message service) answer
// {"Message":...,"ExceptionType":...,"ExceptionMessage":...} instead, and
// the identity platform {"error":"invalid_client","error_description":...};
// ParseODataError reads all three into the same fields.
type ODataError struct {
	Code         string
	Message      string
	InnerMessage string
	InnerType    string
}

// Text returns the most useful message: the inner message, else the outer one.
func (e ODataError) Text() string {
	if s := strings.TrimSpace(e.InnerMessage); s != "" {
		return s
	}
	return strings.TrimSpace(e.Message)
}

// ParseODataError reads an error body. ok is false when body is not one of
// the known JSON error shapes. It never panics, whatever the input.
func ParseODataError(body []byte) (ODataError, bool) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return ODataError{}, false
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return ODataError{}, false
	}
	var out ODataError
	if ev, ok := raw["error"]; ok {
		var obj struct {
			Code       json.RawMessage `json:"code"`
			Message    json.RawMessage `json:"message"`
			InnerError *struct {
				Message json.RawMessage `json:"message"`
				Type    json.RawMessage `json:"type"`
			} `json:"innererror"`
		}
		if json.Unmarshal(ev, &obj) == nil && (obj.Message != nil || obj.InnerError != nil || obj.Code != nil) {
			out.Code = jsonText(obj.Code)
			out.Message = messageText(obj.Message)
			if obj.InnerError != nil {
				out.InnerMessage = jsonText(obj.InnerError.Message)
				out.InnerType = jsonText(obj.InnerError.Type)
			}
			if out.Text() == "" && out.Code == "" {
				return ODataError{}, false
			}
			return out, true
		}
		// The identity platform: {"error":"invalid_client","error_description":"..."}.
		var code string
		if json.Unmarshal(ev, &code) == nil {
			out.Code = code
			out.Message = jsonText(raw["error_description"])
			return out, code != "" || out.Message != ""
		}
	}
	// JSON custom services.
	for _, k := range []string{"ExceptionMessage", "Message", "message"} {
		if v, ok := raw[k]; ok {
			if s := jsonText(v); s != "" {
				out.Message = s
				out.InnerType = jsonText(raw["ExceptionType"])
				return out, true
			}
		}
	}
	return ODataError{}, false
}

// messageText reads OData v4's message, which OData v3 servers sent as
// {"lang":"en-US","value":"..."}.
func messageText(v json.RawMessage) string {
	if s := jsonText(v); s != "" {
		return s
	}
	var m struct {
		Value string `json:"value"`
	}
	if json.Unmarshal(v, &m) == nil {
		return m.Value
	}
	return ""
}

// jsonText returns a JSON string's value, or "" for anything else.
func jsonText(v json.RawMessage) string {
	var s string
	if len(v) == 0 || json.Unmarshal(v, &s) != nil {
		return ""
	}
	return s
}

var (
	titleRe = regexp.MustCompile(`(?is)<title[^>]*>(.*?)</title>`)
	tagRe   = regexp.MustCompile(`(?s)<[^>]*>`)
	dropRe  = regexp.MustCompile(`(?is)<(script|style|head)[^>]*>.*?</(script|style|head)>`)
	spaceRe = regexp.MustCompile(`\s+`)
)

// ErrorText returns a precise, bounded, single-line reason for an error
// answer: F&O's innererror.message (else error.message) for JSON error
// bodies, the title and text of an HTML page (a proxy's error page), or
// the body itself. Credential-looking values are redacted.
func ErrorText(contentType string, body []byte) string {
	if len(body) > maxErrorBody {
		body = body[:maxErrorBody]
	}
	if oe, ok := ParseODataError(body); ok {
		t := oe.Text()
		if oe.Code != "" && !strings.Contains(t, oe.Code) {
			if t == "" {
				t = oe.Code
			} else {
				t = oe.Code + ": " + t
			}
		}
		return clip(t)
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return ""
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "text/html" || looksHTML(trimmed) {
		return clip(htmlText(trimmed))
	}
	if !utf8.Valid(trimmed) {
		return clip("a binary body of " + strconv.Itoa(len(body)) + " bytes")
	}
	prefix := ""
	if mt != "" && mt != "text/plain" && !strings.HasSuffix(mt, "json") {
		prefix = mt + " body: "
	}
	return clip(prefix + string(trimmed))
}

func looksHTML(b []byte) bool {
	if len(b) > 512 {
		b = b[:512]
	}
	l := bytes.ToLower(b)
	return bytes.HasPrefix(l, []byte("<!doctype html")) || bytes.Contains(l, []byte("<html")) || bytes.Contains(l, []byte("<body"))
}

// htmlText summarises an HTML page: "HTML error page (title): text".
func htmlText(b []byte) string {
	var title string
	if m := titleRe.FindSubmatch(b); m != nil {
		title = strings.TrimSpace(spaceRe.ReplaceAllString(html.UnescapeString(string(m[1])), " "))
	}
	text := dropRe.ReplaceAll(b, nil)
	text = tagRe.ReplaceAll(text, []byte(" "))
	s := strings.TrimSpace(spaceRe.ReplaceAllString(html.UnescapeString(string(text)), " "))
	if title != "" {
		s = strings.TrimSpace(strings.TrimPrefix(s, title))
	}
	out := "an HTML page instead of JSON (a proxy or gateway answered?)"
	if title != "" {
		out += ": " + title
	}
	if s != "" {
		out += ": " + s
	}
	return out
}

// clip makes s one line of at most MaxReasonBytes (on a rune boundary)
// and redacts credential-looking values.
func clip(s string) string {
	s = strings.TrimSpace(spaceRe.ReplaceAllString(strings.ToValidUTF8(s, "?"), " "))
	s = logging.RedactText(s)
	if len(s) <= MaxReasonBytes {
		return s
	}
	cut := MaxReasonBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// RetryAfter parses a Retry-After header (seconds or an HTTP date),
// capped at five minutes. ok is false when the header is absent or bad.
func RetryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if n < 0 || n != n {
			return 0, false
		}
		d = time.Duration(n * float64(time.Second))
		if n > maxRetryAfter.Seconds() {
			d = maxRetryAfter
		}
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
		if d < 0 {
			d = 0
		}
	} else {
		return 0, false
	}
	return min(d, maxRetryAfter), true
}

// Classify turns an F&O answer into the error a sink returns, the only
// place in plantgate that maps HTTP statuses:
//
//	2xx                         nil
//	401                         transient (Env.Do refreshes the token and retries once first)
//	408                         transient
//	429                         pipeline.Throttle(Retry-After, or DefaultRetryAfter)
//	503 with Retry-After        pipeline.Throttle(Retry-After)
//	500 with a write exception  permanent (F&O's validation failure inside $batch)
//	other 5xx                   transient
//	403                         permanent (and the sink reports itself unhealthy)
//	other 4xx (400 404 409 422) permanent, with F&O's innererror.message
//
// The returned error wraps an *Error carrying the status and F&O's text.
func Classify(op string, status int, h http.Header, body []byte, now time.Time) error {
	if status >= 200 && status < 300 {
		return nil
	}
	if h == nil {
		h = http.Header{}
	}
	e := &Error{Op: op, Status: status, Message: ErrorText(h.Get("Content-Type"), body)}
	if oe, ok := ParseODataError(body); ok {
		e.Code = oe.Code
		if status == http.StatusInternalServerError && strings.Contains(oe.InnerType, writeExceptionType) {
			return pipeline.Permanent(e)
		}
	}
	ra, hasRA := RetryAfter(h, now)
	e.RetryAfter = ra
	switch {
	case status == http.StatusTooManyRequests:
		if !hasRA {
			ra = DefaultRetryAfter
			e.RetryAfter = ra
		}
		return pipeline.Throttle(ra, e)
	case status == http.StatusServiceUnavailable && hasRA:
		return pipeline.Throttle(ra, e)
	case status == http.StatusUnauthorized, status == http.StatusRequestTimeout:
		return e
	case status >= 400 && status < 500:
		return pipeline.Permanent(e)
	}
	return e
}
