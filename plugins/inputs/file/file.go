// Package file is the "file" source: it reads messages line by line from a
// file (optionally following it as it grows, like tail -f) or from
// standard input. Each line is one message, decoded as JSON, CSV or raw.
//
// The byte offset of the last line handed to the queue is written in the
// same transaction as the records, so after a crash or restart the source
// resumes exactly after the last committed line: no line lost, none twice.
package file

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/backoff"
	"github.com/plantgate/plantgate/internal/codec"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/plugins/inputs"
)

// SampleConfig is the plugin's annotated sample.
//
//go:embed sample.yaml
var SampleConfig string

// Config is the file source's settings.
type Config struct {
	// Path is the file to read; "-" reads standard input.
	Path string `yaml:"path" required:"true" file:"read,stdin,later"`
	// Format of each line: json, csv or raw.
	Format string `yaml:"format" default:"json" enum:"json,csv,raw"`
	// CSV column names, for format csv.
	CSVHeader []string `yaml:"csv_header"`
	// CSVDelimiter for format csv.
	CSVDelimiter string `yaml:"csv_delimiter" default:","`
	// Follow keeps reading as the file grows.
	Follow bool `yaml:"follow"`
	// PollInterval is how often a followed file is checked for new lines.
	PollInterval time.Duration `yaml:"poll_interval" default:"500ms"`
	// BatchLines is the most lines per queue commit.
	BatchLines int `yaml:"batch_lines" default:"500" min:"1"`
	// MaxLineBytes rejects (dead-letters) longer lines.
	MaxLineBytes int `yaml:"max_line_bytes" default:"1048576" min:"16"`
}

// Validate checks settings that tags cannot express.
func (c *Config) Validate() error {
	if c.Format == "csv" && len(c.CSVHeader) == 0 {
		return errors.New("format csv needs csv_header")
	}
	return nil
}

func init() {
	inputs.Add(pipeline.SourceFactory{
		Type:      "file",
		NewConfig: func() any { return &Config{} },
		New: func(cfg any, env pipeline.Env) (pipeline.Source, error) {
			return New(cfg.(*Config), env)
		},
	})
}

// File is the source.
type File struct {
	cfg   Config
	dec   codec.Decoder
	log   zerolog.Logger
	state pipeline.StateStore

	mu    sync.Mutex
	lines int64
	bad   int64
	last  time.Time
	eof   bool
}

// New builds a file source; it opens nothing until Run.
func New(cfg *Config, env pipeline.Env) (*File, error) {
	dec, err := codec.New(codec.Options{Format: cfg.Format, CSVHeader: cfg.CSVHeader, CSVDelimiter: cfg.CSVDelimiter})
	if err != nil {
		return nil, err
	}
	if cfg.BatchLines <= 0 {
		cfg.BatchLines = 500
	}
	if cfg.MaxLineBytes <= 0 {
		cfg.MaxLineBytes = 1 << 20
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 500 * time.Millisecond
	}
	return &File{cfg: *cfg, dec: dec, log: env.Log, state: env.State}, nil
}

const stateOffset = "offset"

// Run reads until EOF (or, with follow, until ctx ends).
func (f *File) Run(ctx context.Context, em pipeline.Emitter) error {
	var r io.Reader
	var offset int64
	if f.cfg.Path == "-" {
		r = os.Stdin
	} else {
		fh, err := os.Open(f.cfg.Path)
		if err != nil {
			return fmt.Errorf("open %s: %w", f.cfg.Path, err)
		}
		defer fh.Close()
		if f.state != nil {
			if v, ok, err := f.state.Get(stateOffset); err != nil {
				return fmt.Errorf("read offset: %w", err)
			} else if ok {
				offset, _ = strconv.ParseInt(string(v), 10, 64)
			}
		}
		if fi, err := fh.Stat(); err == nil && fi.Size() < offset {
			f.log.Warn().Int64("offset", offset).Int64(logging.FieldBytes, fi.Size()).Msg("file is shorter than the saved offset (truncated or replaced); reading from the start")
			offset = 0
		}
		if _, err := fh.Seek(offset, io.SeekStart); err != nil {
			return fmt.Errorf("seek %s: %w", f.cfg.Path, err)
		}
		r = fh
	}
	br := bufio.NewReaderSize(r, 64<<10)
	var msgs []pipeline.Message
	var pending []byte
	flush := func() error {
		if len(msgs) == 0 {
			return nil
		}
		var err error
		if se, ok := em.(pipeline.StateEmitter); ok && f.cfg.Path != "-" && f.state != nil {
			err = se.EmitWithState(ctx, []pipeline.StateWrite{{Name: stateOffset, Value: []byte(strconv.FormatInt(offset, 10))}}, msgs...)
		} else {
			err = em.Emit(ctx, msgs...)
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.lines += int64(len(msgs))
		f.last = time.Now().UTC()
		f.mu.Unlock()
		msgs = msgs[:0]
		return nil
	}
	for ctx.Err() == nil {
		chunk, err := br.ReadSlice('\n')
		pending = append(pending, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read %s: %w", f.cfg.Path, err)
		}
		complete := len(pending) > 0 && pending[len(pending)-1] == '\n'
		if errors.Is(err, io.EOF) && !complete {
			// A partial last line: wait for the rest when following,
			// otherwise take it as the last message.
			if f.cfg.Follow {
				if ferr := flush(); ferr != nil {
					return ferr
				}
				f.setEOF(true)
				if backoff.Wait(ctx, f.cfg.PollInterval) != nil {
					break
				}
				continue
			}
			if len(pending) == 0 {
				break
			}
		}
		f.setEOF(false)
		line := pending
		offset += int64(len(line))
		pending = nil
		line = trimEOL(line)
		if len(line) > 0 {
			msgs = append(msgs, f.message(line))
		}
		if len(msgs) >= f.cfg.BatchLines || br.Buffered() == 0 {
			if ferr := flush(); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) && !f.cfg.Follow {
			break
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if !f.cfg.Follow {
		f.setEOF(true)
		<-ctx.Done() // a finished source idles until the gateway stops
	}
	return nil
}

func (f *File) setEOF(v bool) {
	f.mu.Lock()
	f.eof = v
	f.mu.Unlock()
}

func trimEOL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

func (f *File) message(line []byte) pipeline.Message {
	raw := append([]byte(nil), line...)
	m := pipeline.Message{Raw: raw, Time: time.Now().UTC(), Meta: map[string]any{"path": f.cfg.Path}}
	if len(raw) > f.cfg.MaxLineBytes {
		m.DecodeErr = fmt.Errorf("line of %d bytes exceeds max_line_bytes %d", len(raw), f.cfg.MaxLineBytes)
		m.Raw = raw[:f.cfg.MaxLineBytes]
	} else {
		m.Payload, m.DecodeErr = f.dec.Decode(raw)
	}
	if m.DecodeErr != nil {
		f.mu.Lock()
		f.bad++
		f.mu.Unlock()
	}
	return m
}

// Status implements pipeline.StatusReporter.
func (f *File) Status() map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return map[string]any{"path": f.cfg.Path, "lines": f.lines, "decode_failures": f.bad, "last_line_at": f.last, "at_end": f.eof}
}

var (
	_ pipeline.Source         = (*File)(nil)
	_ pipeline.StatusReporter = (*File)(nil)
)

// Redecode implements pipeline.Redecoder: a replayed line is decoded with
// the source's current format settings.
func (f *File) Redecode(raw []byte, _ map[string]any) (any, error) {
	if len(raw) > f.cfg.MaxLineBytes {
		return nil, fmt.Errorf("line of %d bytes exceeds max_line_bytes %d", len(raw), f.cfg.MaxLineBytes)
	}
	return f.dec.Decode(raw)
}

var _ pipeline.Redecoder = (*File)(nil)
