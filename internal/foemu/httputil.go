package foemu

import (
	"encoding/base64"
	"encoding/json"
	"log"
	"net/http"
	"strings"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/logging"
)

// Exception types F&O puts in innererror.type.
const (
	typeWrite    = "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException"
	typeOData    = "Microsoft.OData.ODataException"
	typeNotFound = "Microsoft.OData.UriParser.ODataUnrecognizedPathException"
	typeXpp      = "Microsoft.Dynamics.Ax.Xpp.ErrorException"
	typeServer   = "System.InvalidOperationException"
	typeThrottle = "Microsoft.Dynamics.Platform.Integration.Services.OData.ODataThrottlingException"
)

// Stack traces F&O puts in innererror.stacktrace for write failures.
const (
	stackCreate = "   at Microsoft.Dynamics.Platform.Integration.Services.OData.Update.UpdateProcessor.CreateEntity_Save(ChangeOperationContext context, ChangeInfo changeInfo)"
	stackUpdate = "   at Microsoft.Dynamics.Platform.Integration.Services.OData.Update.UpdateProcessor.UpdateEntity_Save(ChangeOperationContext context, ChangeInfo changeInfo)"
	stackDelete = "   at Microsoft.Dynamics.Platform.Integration.Services.OData.Update.UpdateProcessor.DeleteEntity_Save(ChangeOperationContext context, ChangeInfo changeInfo)"
)

// odataErrorBody renders the error shape F&O answers with: an empty
// error.code, a generic error.message and the details in innererror.
func odataErrorBody(msg, typ, stack string) []byte {
	b, _ := json.Marshal(map[string]any{ // maps of strings always marshal
		"error": map[string]any{
			"code":    "",
			"message": "An error has occurred.",
			"innererror": map[string]any{
				"message":    msg,
				"type":       typ,
				"stacktrace": stack,
			},
		},
	})
	return b
}

// writeODataError writes an F&O-style error response.
func writeODataError(w http.ResponseWriter, status int, msg, typ, stack string) {
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(status)
	_, _ = w.Write(odataErrorBody(msg, typ, stack))
}

// writeJSON writes v as a JSON response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// newStdLogger adapts zerolog for http.Server.ErrorLog; the server's own
// messages (TLS handshake errors from untrusting clients) go to debug.
func newStdLogger(l zerolog.Logger) *log.Logger {
	return log.New(stdWriter{l}, "", 0)
}

type stdWriter struct{ l zerolog.Logger }

// Write logs one server message.
func (s stdWriter) Write(b []byte) (int, error) {
	s.l.Debug().Str(logging.FieldReason, logging.RedactText(strings.TrimSpace(string(b)))).Msg("http server")
	return len(b), nil
}
