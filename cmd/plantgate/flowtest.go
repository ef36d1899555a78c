package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/plantgate/plantgate/internal/app"
)

// flowStdin is what --payload - reads; tests replace it.
var flowStdin io.Reader = os.Stdin

const flowUsage = `  plantgate flow test -c FILE --flow NAME (--payload FILE | --message JSON) [--topic T] [--json]
      what the flow makes of one message and what each of its sinks would send
`

const flowTestHelp = `Usage:
  plantgate flow test -c FILE --flow NAME (--payload FILE | --message JSON) [--topic T]
                      [--received-at TIME] [--json]

Shows what flow NAME makes of one message, as the running gateway would,
without sending anything: whether its source receives the message (an MQTT
source: the topic against its topics) and the flow selects it (which part
of when is false), the payload as decoded by the source's settings, the
order key, the id, the mapped record, and for each sink of the flow what it
would send: for fo.odata the POST or PATCH of the entity, for fo.mes the
SendMessage call with its envelope, for fo.dmf the record's row in the
data file's columns; headers are shown with the access token left out. The
requests are built by the sinks' own code. A record a sink would refuse
shows the reason it would be dead-lettered with.

--payload FILE reads the message's bytes from FILE (- for stdin);
--message takes them inline. --topic is the topic it arrives on (needed
for an MQTT source). --received-at (RFC 3339) fixes received_at, for
reproducible output. --json prints one JSON object (request bodies as
text, exactly as sent).

Secrets are not resolved and the files the config names are not opened;
no queue file is opened or created and nothing is sent over the network.

Exit codes: 0 the flow selects the message and every sink would send it;
1 it would not be delivered (the source does not receive it, when is false,
the payload does not decode, an expression fails, a sink refuses the
record); 2 usage (unknown flow, no message); 78 config problems.
`

func cmdFlow(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "test" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, "Usage:\n"+flowUsage)
			return exitOK
		}
		fmt.Fprint(stderr, "Usage:\n"+flowUsage)
		return exitUsage
	}
	fs, cfgPath := newFlags("flow test", stderr)
	name := fs.String("flow", "", "the flow (a key of the flows: section)")
	payloadFile := fs.String("payload", "", "file holding the message's bytes; - for stdin")
	message := fs.String("message", "", "the message's bytes, inline (usually JSON)")
	topic := fs.String("topic", "", "the topic the message arrives on (MQTT sources)")
	at := fs.String("received-at", "", "when the message is received (RFC 3339); default now")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if code, ok := parseFlags(fs, args[1:], flowTestHelp, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "plantgate flow test: unexpected argument %q\nRun 'plantgate flow test --help' for its flags.\n", fs.Arg(0))
		return exitUsage
	}
	var in app.FlowTestInput
	in.Topic = *topic
	switch {
	case *name == "":
		fmt.Fprintln(stderr, "plantgate flow test: --flow NAME is required")
		return exitUsage
	case (*payloadFile == "") == (*message == ""):
		fmt.Fprintln(stderr, "plantgate flow test: give the message with either --payload FILE or --message TEXT")
		return exitUsage
	case *message != "":
		in.Payload = []byte(*message)
	default:
		var err error
		if *payloadFile == "-" {
			in.Payload, err = io.ReadAll(flowStdin)
		} else {
			in.Payload, err = os.ReadFile(*payloadFile)
		}
		if err != nil {
			fmt.Fprintf(stderr, "plantgate flow test: read --payload: %v\n", err)
			return exitUsage
		}
	}
	if *at != "" {
		t, err := time.Parse(time.RFC3339Nano, *at)
		if err != nil {
			fmt.Fprintf(stderr, "plantgate flow test: --received-at %q: want a time like 2026-12-01T06:00:00Z\n", *at)
			return exitUsage
		}
		in.Time = t
	}
	// No secrets and no files: the flow and the sinks' settings are all
	// it needs, and it sends nothing.
	opts := app.ConfigOptions()
	opts.SkipSecrets = true
	cfg, flows, err := app.LoadConfigOptions(*cfgPath, opts)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	res, err := app.FlowTest(cfg, flows, *name, in)
	switch {
	case errors.Is(err, app.ErrUnknownFlow):
		fmt.Fprintf(stderr, "plantgate flow test: %v\n", err)
		return exitUsage
	case err != nil:
		return reportConfigError(err, stderr)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(stderr, "plantgate:", err)
			return exitFailure
		}
	} else {
		printFlowTest(stdout, res)
	}
	if !res.Delivered() {
		return exitFailure
	}
	return exitOK
}

// printFlowTest writes res as text.
func printFlowTest(w io.Writer, r *app.FlowTestResult) {
	fmt.Fprintf(w, "flow %s (source %s, %s)\n", r.Flow, r.Source, r.SourceType)
	if r.Topic != "" {
		fmt.Fprintf(w, "topic:    %s\n", r.Topic)
	}
	fmt.Fprintf(w, "received: %s\n", r.Received.Format(time.RFC3339Nano))
	if r.Payload != nil {
		fmt.Fprintf(w, "payload:  %s\n", indentJSON(r.Payload, "          "))
	}
	switch {
	case r.Error != "":
		fmt.Fprintf(w, "matched:  no, the message cannot become a record: %s\n", r.Error)
		fmt.Fprintf(w, "          (the gateway dead-letters it in stream _source.%s with this reason)\n", r.Source)
		return
	case !r.Matched:
		fmt.Fprintf(w, "matched:  no: %s\n", r.Why)
		return
	}
	fmt.Fprintln(w, "matched:  yes")
	fmt.Fprintf(w, "key:      %s\n", orNone(r.Key))
	fmt.Fprintf(w, "id:       %s\n", orNone(r.ID))
	fmt.Fprintf(w, "record:   %s\n", indentJSON(r.Fields, "          "))
	for _, s := range r.Sinks {
		fmt.Fprintf(w, "\nsink %s (%s), stream %s", s.Sink, s.Type, s.Stream)
		if s.Overflow {
			fmt.Fprint(w, ", overflow: only while the flow's fo.odata stream is backlogged or throttled")
		}
		fmt.Fprintln(w)
		switch {
		case s.Refused != "":
			fmt.Fprintf(w, "  refused: %s\n  (the gateway dead-letters the record with this reason)\n", s.Refused)
			continue
		case s.NoPreview:
			fmt.Fprintln(w, "  (this sink type shows no request)")
			continue
		}
		p := s.Request
		if p.Note != "" {
			fmt.Fprintf(w, "  %s\n", p.Note)
		}
		if p.File != "" {
			fmt.Fprintf(w, "  data file %s:\n", p.File)
			for i, c := range p.Columns {
				cell := ""
				if i < len(p.Row) {
					cell = p.Row[i]
				}
				fmt.Fprintf(w, "    %-32s %s\n", c, cell)
			}
		}
		var reqs []shownRequest
		if p.Method != "" {
			reqs = append(reqs, shownRequest{p.Method, p.URL, p.Path, p.Header, p.Body})
		} else if len(p.Body) > 0 {
			fmt.Fprintf(w, "  %s\n", p.Body)
		}
		for _, t := range p.Then {
			reqs = append(reqs, shownRequest{t.Method, t.URL, t.Path, t.Header, t.Body})
		}
		for i, q := range reqs {
			if i > 0 {
				fmt.Fprintln(w, "  then:")
			}
			fmt.Fprintf(w, "  %s %s%s\n", q.method, q.url, q.path)
			keys := make([]string, 0, len(q.header))
			for k := range q.header {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(w, "  %s: %s\n", k, q.header[k])
			}
			fmt.Fprintf(w, "\n  %s\n", indentBody(q.body, "  "))
			if mc := messageContent(q.body); mc != "" {
				fmt.Fprintf(w, "  _messageContent, decoded:\n  %s\n", mc)
			}
		}
	}
}

// shownRequest is one request as printFlowTest shows it.
type shownRequest struct {
	method, url, path string
	header            map[string]string
	body              []byte
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// indentJSON prints v as indented JSON, continuation lines prefixed.
func indentJSON(v any, prefix string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent(prefix, "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimRight(b.String(), "\n")
}

// indentBody shows a JSON body indented, anything else as it is.
func indentBody(body []byte, prefix string) string {
	var b bytes.Buffer
	if json.Indent(&b, body, prefix, "  ") != nil {
		return string(body)
	}
	return b.String()
}

// messageContent is the decoded _messageContent of a MES envelope.
func messageContent(body []byte) string {
	var env map[string]any
	if json.Unmarshal(body, &env) != nil {
		return ""
	}
	s, ok := env["_messageContent"].(string)
	if !ok {
		return ""
	}
	return indentBody([]byte(s), "  ")
}
