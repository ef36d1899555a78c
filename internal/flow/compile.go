package flow

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/plantgate/plantgate/internal/config"
)

// SourceDeadStream names the stream holding dead letters of messages from
// source that could not be decoded or mapped. Flow names cannot start with
// an underscore, so it never collides with a flow's stream.
func SourceDeadStream(source string) string { return "_source." + source }

// StreamName is the queue stream of a (flow, sink) pair.
func StreamName(flow, sink string) string { return flow + "." + sink }

// SharedStreamName is the one stream of a sink whose flows share a stream
// (pipeline.SinkFactory.SharedStream). Instance names hold no dot, so it
// never collides with a (flow, sink) stream.
func SharedStreamName(sink string) string { return sink }

// AssignStreams sets the stream of every (flow, sink) pair: the sink's
// shared stream where shared(sink) says its flows share one (so order per
// key holds across them), else the pair's own.
func AssignStreams(flows []*Flow, shared func(sink string) bool) {
	for _, f := range flows {
		f.streams = make(map[string]string, len(f.Sinks))
		for _, s := range f.Sinks {
			if shared != nil && shared(s) {
				f.streams[s] = SharedStreamName(s)
			} else {
				f.streams[s] = StreamName(f.Name, s)
			}
		}
		if o := f.cfg.Overflow; o.Sink != "" && len(f.Sinks) == 1 {
			over := StreamName(f.Name, o.Sink)
			if shared != nil && shared(o.Sink) {
				over = SharedStreamName(o.Sink)
			}
			f.streams[o.Sink] = over
			f.overflow = &overflow{primary: f.streams[f.Sinks[0]], over: over, sink: o.Sink,
				backlog: int64(o.Backlog), throttled: o.Throttled.D()}
		}
	}
}

// Stream returns the queue stream of the flow's records for sink.
func (f *Flow) Stream(sink string) string {
	if s, ok := f.streams[sink]; ok {
		return s
	}
	return StreamName(f.Name, sink)
}

// Streams returns the distinct streams of flows, in order.
func Streams(flows []*Flow) []string {
	seen := map[string]bool{}
	var out []string
	for _, f := range flows {
		for _, s := range f.Sinks {
			if st := f.Stream(s); !seen[st] {
				seen[st] = true
				out = append(out, st)
			}
		}
	}
	return out
}

// Flow is a compiled flow.
type Flow struct {
	Name   string
	Source string
	Sinks  []string
	when   *vm.Program
	key    *vm.Program
	id     *vm.Program
	fields []compiledField
	cfg    *config.Flow
	// streams maps each sink to the flow's stream for it (AssignStreams).
	streams map[string]string
	// overflow is set for a flow with overflow: (AssignStreams).
	overflow *overflow
	// usesRaw is set when an expression's text mentions raw: only then
	// does apply copy the message's bytes into a string for it.
	usesRaw bool
}

type compiledField struct {
	name string
	prog *vm.Program
	src  string
}

// exprEnv is the compile-time shape of what expressions see.
func exprEnv() map[string]any {
	return map[string]any{
		"payload":     map[string]any{},
		"meta":        map[string]any{},
		"topic":       "",
		"raw":         "",
		"received_at": time.Time{},
		"source":      "",
	}
}

var exprFuncs = []expr.Option{
	expr.Function("mqttMatch", func(p ...any) (any, error) {
		topic, _ := p[0].(string)
		filter, _ := p[1].(string)
		return MQTTMatch(filter, topic), nil
	}, new(func(string, string) bool)),
	expr.Function("str", func(p ...any) (any, error) {
		if p[0] == nil {
			return "", nil
		}
		return fmt.Sprint(p[0]), nil
	}, new(func(any) string)),
}

// MQTTMatch reports whether topic matches an MQTT topic filter with + and #
// wildcards ($share/group/ prefixes are ignored).
func MQTTMatch(filter, topic string) bool {
	if strings.HasPrefix(filter, "$share/") {
		parts := strings.SplitN(filter, "/", 3)
		if len(parts) < 3 {
			return false
		}
		filter = parts[2]
	}
	f := strings.Split(filter, "/")
	t := strings.Split(topic, "/")
	for i, seg := range f {
		if seg == "#" {
			return true
		}
		if i >= len(t) {
			return false
		}
		if seg != "+" && seg != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}

// Compile compiles the flows of cfg. Every expression error is reported,
// as config.Errors with the file position of the offending text.
func Compile(cfg *config.Config) ([]*Flow, error) {
	var probs config.Errors
	var out []*Flow
	for _, name := range cfg.FlowOrder {
		fc := cfg.Flows[name]
		f := &Flow{Name: name, Source: fc.From, Sinks: fc.To, cfg: fc}
		var err error
		if fc.When.Src != "" {
			if f.when, err = compileExpr(fc.When, expr.AsBool()); err != nil {
				p := problem(fc.When, "when", err)
				if _, got, ok := strings.Cut(err.Error(), "expected bool, but got "); ok {
					// when selects messages: it must give true or false.
					p.Msg = fmt.Sprintf("expression %q gives %s, not true or false: when must be a condition, such as payload.good > 0 or topic == \"mes/line3/finished\"",
						fc.When.Src, firstLine(got))
				}
				probs = append(probs, p)
			}
		}
		if fc.Key.Src != "" {
			if f.key, err = compileExpr(fc.Key); err != nil {
				probs = append(probs, problem(fc.Key, "key", err))
			}
		}
		if fc.ID.Src != "" {
			if f.id, err = compileExpr(fc.ID); err != nil {
				probs = append(probs, problem(fc.ID, "id", err))
			}
		}
		for _, m := range fc.Map {
			p, err := compileExpr(m.Expr)
			if err != nil {
				probs = append(probs, problem(m.Expr, "map."+m.Name, err))
				continue
			}
			f.fields = append(f.fields, compiledField{name: m.Name, prog: p, src: m.Expr.Src})
		}
		srcs := []string{fc.When.Src, fc.Key.Src, fc.ID.Src}
		for _, m := range fc.Map {
			srcs = append(srcs, m.Expr.Src)
		}
		f.usesRaw = slices.ContainsFunc(srcs, func(src string) bool { return strings.Contains(src, "raw") })
		out = append(out, f)
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return out, nil
}

func compileExpr(e config.Expr, opts ...expr.Option) (*vm.Program, error) {
	all := append([]expr.Option{expr.Env(exprEnv()), expr.MaxNodes(2000)}, exprFuncs...)
	return expr.Compile(e.Src, append(all, opts...)...)
}

func problem(e config.Expr, field string, err error) config.Problem {
	pos := e.Pos
	msg := err.Error()
	var fe *file.Error
	if errors.As(err, &fe) {
		msg = fe.Message
		if fe.Line <= 1 {
			pos.Column += fe.Column
		} else {
			pos.Line += fe.Line - 1
			pos.Column = fe.Column + 1
		}
	}
	if pos.Path == "" {
		pos.Path = field
	}
	return config.Problem{Pos: pos, Msg: fmt.Sprintf("expression %q: %s", e.Src, firstLine(msg))}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

var envPool = sync.Pool{New: func() any { return make(map[string]any, 8) }}

// vmPool keeps expression VMs for reuse: vm.Run makes a new one, with its
// stack, for every expression of every message.
var vmPool = sync.Pool{New: func() any { return &vm.VM{} }}

// run evaluates p in env on a pooled VM.
func run(p *vm.Program, env map[string]any) (any, error) {
	v := vmPool.Get().(*vm.VM)
	defer vmPool.Put(v)
	return v.Run(p, env)
}

// evalErr explains why an expression could not produce a value.
type evalErr struct {
	field string
	src   string
	err   error
}

func (e *evalErr) Error() string {
	if e.err == nil {
		return fmt.Sprintf("%s: expression %q gave no value (missing field in the payload?)", e.field, e.src)
	}
	return fmt.Sprintf("%s: expression %q: %s", e.field, e.src, firstLine(e.err.Error()))
}
