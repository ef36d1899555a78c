package logging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// Format selects how log events are written.
type Format string

// Output formats. FormatAuto picks console on a terminal and JSON otherwise.
const (
	FormatAuto    Format = "auto"
	FormatJSON    Format = "json"
	FormatConsole Format = "console"
)

// Options configure the root logger.
type Options struct {
	// Level is a zerolog level name: trace, debug, info, warn, error. Empty means info.
	Level string
	// Format is auto, json or console. Empty means auto.
	Format Format
	// Writer defaults to os.Stdout.
	Writer io.Writer
}

func init() {
	zerolog.TimeFieldFormat = time.RFC3339Nano
	zerolog.TimestampFunc = func() time.Time { return time.Now().UTC() }
	zerolog.DurationFieldUnit = time.Millisecond
	zerolog.DurationFieldInteger = false
}

// ParseLevel parses a level name; it accepts the zerolog names and "warning".
func ParseLevel(s string) (zerolog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "info":
		return zerolog.InfoLevel, nil
	case "warning":
		return zerolog.WarnLevel, nil
	}
	l, err := zerolog.ParseLevel(strings.ToLower(s))
	if err != nil || l == zerolog.NoLevel {
		return zerolog.InfoLevel, fmt.Errorf("unknown log level %q (want trace, debug, info, warn or error)", s)
	}
	return l, nil
}

// New builds the root logger. Only cmd/ calls it; everything else receives a
// child logger.
func New(o Options) (zerolog.Logger, error) {
	lvl, err := ParseLevel(o.Level)
	if err != nil {
		return zerolog.Nop(), err
	}
	w := o.Writer
	if w == nil {
		w = os.Stdout
	}
	format := o.Format
	if format == "" {
		format = FormatAuto
	}
	if format == FormatAuto {
		format = FormatJSON
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = FormatConsole
		}
	}
	switch format {
	case FormatJSON:
	case FormatConsole:
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	default:
		return zerolog.Nop(), fmt.Errorf("unknown log format %q (want auto, json or console)", o.Format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// Component returns a child logger tagged with a component name and, if not
// empty, a plugin type and instance name.
//
// A zerolog context only appends, so a field the parent already carries
// would appear twice in every event, which JSON consumers reject. Component
// therefore adds only the fields the parent lacks: Component(Component(l,
// "fo", "", ""), "fo", "", "prod") tags events once with component fo and
// instance prod. A parent's field is never replaced: pass the logger of the
// enclosing scope, not another component's, to tag a different component.
func Component(parent zerolog.Logger, component, plugin, instance string) zerolog.Logger {
	have := contextFields(parent)
	c := parent.With()
	for _, f := range [...]struct{ key, val string }{{FieldComponent, component}, {FieldPlugin, plugin}, {FieldInstance, instance}} {
		if f.val == "" {
			continue
		}
		if _, dup := have[f.key]; dup {
			continue
		}
		c = c.Str(f.key, f.val)
	}
	return c.Logger()
}

// contextFields returns the names of the fields l adds to every event.
// zerolog does not expose a logger's context, so it writes one event to a
// buffer; Component runs when a component is built, not per event.
func contextFields(l zerolog.Logger) map[string]bool {
	var buf bytes.Buffer
	probe := l.Output(&buf).Level(zerolog.TraceLevel).Sample(nil)
	probe.Log().Send()
	var m map[string]json.RawMessage
	if json.Unmarshal(buf.Bytes(), &m) != nil {
		return nil
	}
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}
