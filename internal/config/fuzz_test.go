package config_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/plantgate/plantgate/internal/config"
)

// FuzzParse checks that no input makes Parse panic, that every failure is
// a config error, and that every accepted config renders.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a: &a [*a]"))
	f.Add([]byte("<<: [*x]"))
	f.Add([]byte("gateway: {id: g}\nsources: {s: {type: file, path: /p, <<: {format: csv}}}\nsinks: {k: {type: recorder}}\nflows: {f: {from: s, to: k}}\n"))
	f.Add([]byte("http: {admin_token: ${file:s}}\n"))
	f.Add([]byte("\t- x"))

	opts := testOptions()
	// Never touch the real file system while fuzzing.
	opts.ReadFile = func(path string) ([]byte, error) {
		if path == "s" {
			return []byte("fuzz-secret\n"), nil
		}
		return nil, fs.ErrNotExist
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse("fuzz.yaml", data, opts)
		if err != nil {
			if !config.IsConfigError(err) {
				t.Fatalf("Parse: got a %T error, want config.Errors: %v", err, err)
			}
			if c != nil {
				t.Fatalf("Parse: got a config with the error")
			}
			if len(config.AsProblems(err)) == 0 {
				t.Fatalf("Parse: got an empty Errors")
			}
			_ = err.Error()
			return
		}
		if _, err := c.Redacted(); err != nil {
			t.Fatalf("Redacted: %v", err)
		}
	})
}
