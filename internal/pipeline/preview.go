package pipeline

import (
	"context"
	"time"
)

// RequestPreview is the request a sink would send for one record, as
// plantgate flow test shows it: nothing is sent.
type RequestPreview struct {
	// Method and Path are the HTTP method and the path below the
	// environment URL (with its query), when the sink speaks HTTP.
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
	// URL is the environment URL Path is relative to.
	URL string `json:"url,omitempty"`
	// Header holds the request headers the sink sets, with every secret
	// (the access token) replaced by a placeholder.
	Header map[string]string `json:"header,omitempty"`
	// Body is the request body exactly as the sink sends it.
	Body []byte `json:"-"`
	// Then lists what may follow the request (an upsert's PATCH after
	// F&O answered that the record exists), each as it would be sent.
	Then []RequestPreview `json:"then,omitempty"`
	// Note explains what the request means or when it is sent.
	Note string `json:"note,omitempty"`
	// Columns and Row are set for a sink that writes data files (DMF):
	// the data file's columns and the record's cells in them, as the file
	// holds them; File names the data file in the package.
	File    string   `json:"file,omitempty"`
	Columns []string `json:"columns,omitempty"`
	Row     []string `json:"row,omitempty"`
}

// RequestPreviewer is implemented by sinks that can show what they would
// send for a record without sending it. The preview must come from the
// same code that builds the real request, so it cannot drift from it; it
// must do no I/O. A record the sink would refuse returns the reason,
// which is what the sink would dead-letter it with.
type RequestPreviewer interface {
	PreviewRequest(r Record) (RequestPreview, error)
}

// OnlineChecker is implemented by plugin settings that can check, before
// the gateway starts, that their peer answers (an MQTT broker: connect
// and disconnect). plantgate check-config --online calls it; it must not
// change anything at the peer. The result says what was checked.
type OnlineChecker interface {
	CheckOnline(ctx context.Context) (string, error)
}

// MessagePreviewer is implemented by source settings that can show the
// message the source would emit for payload, received on topic (for
// sources with topics) at time at, without connecting anywhere:
// plantgate flow test uses it. It decodes with the source's own decoder
// and returns an error when the source would never receive the message
// (a topic outside its topics). A payload that does not decode gives a
// message with DecodeErr set, as the running source would.
type MessagePreviewer interface {
	PreviewMessage(topic string, payload []byte, at time.Time) (Message, error)
}
