package all

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/plugins/inputs"
	"github.com/plantgate/plantgate/plugins/outputs"
)

// TestPluginsAreComplete checks that every plugin folder registers its
// type, and ships a README.md and a sample.yaml that the strict loader
// accepts as the plugin's settings.
func TestPluginsAreComplete(t *testing.T) {
	for _, kind := range []struct {
		dir   string
		types func() []string
	}{{"../inputs", inputs.Types}, {"../outputs", outputs.Types}} {
		entries, err := os.ReadDir(kind.dir)
		if err != nil {
			t.Fatal(err)
		}
		registered := map[string]bool{}
		for _, typ := range kind.types() {
			registered[strings.NewReplacer(".", "", "_", "").Replace(typ)] = true
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			name := e.Name()
			if !registered[name] {
				t.Errorf("%s/%s: no plugin registers a type matching the folder name (registered: %v)", kind.dir, name, kind.types())
			}
			for _, f := range []string{"README.md", "sample.yaml"} {
				if _, err := os.Stat(filepath.Join(kind.dir, name, f)); err != nil {
					t.Errorf("%s/%s: missing %s", kind.dir, name, f)
				}
			}
		}
	}
}

// TestSamplesLoad wraps each plugin's sample.yaml in a minimal config and
// loads it with the strict loader, so samples never drift from the code.
func TestSamplesLoad(t *testing.T) {
	opts := config.Options{SourceConfig: inputs.NewConfig, SinkConfig: outputs.NewConfig, SourceTypes: inputs.Types, SinkTypes: outputs.Types,
		Env: func(string) (string, bool) { return "x", true }, ReadFile: func(string) ([]byte, error) { return []byte("x"), nil }}
	samples, _ := filepath.Glob("../*/*/sample.yaml")
	if len(samples) < 2 {
		t.Fatalf("found %d samples", len(samples))
	}
	for _, p := range samples {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]map[string]any
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		body := "gateway: {id: t}\n" + string(b)
		for name := range doc["sources"] {
			body += "sinks: {zz-out: {type: recorder}}\nflows: {zz: {from: " + name + ", to: zz-out}}\n"
		}
		for name := range doc["sinks"] {
			body += "sources: {zz-in: {type: file, path: x}}\nflows: {zz: {from: zz-in, to: " + name + "}}\n"
		}
		if _, err := config.Parse(p, []byte(body), opts); err != nil {
			t.Errorf("%s does not load:\n%v", p, err)
		}
	}
}
