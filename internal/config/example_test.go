package config_test

import (
	"fmt"

	"github.com/plantgate/plantgate/internal/config"
)

func ExampleParse() {
	type fileConfig struct {
		Path   string `yaml:"path" required:"true"`
		Format string `yaml:"format" default:"json" enum:"json,csv"`
	}
	opts := config.Options{
		SourceConfig: func(typ string) (any, bool) {
			if typ == "file" {
				return &fileConfig{}, true
			}
			return nil, false
		},
		SinkConfig: func(typ string) (any, bool) {
			return nil, typ == "discard"
		},
		SourceTypes: func() []string { return []string{"file"} },
		Env: func(name string) (string, bool) {
			return "s3cr3t", name == "ADMIN_TOKEN"
		},
	}

	good := []byte(`
gateway: {id: line3}
http: {admin_token: "${env:ADMIN_TOKEN}"}
sources:
  mes: {type: file, path: /var/log/mes.jsonl}
sinks:
  discard: {type: discard}
flows:
  all: {from: mes, to: discard, key: payload.order}
`)
	c, err := config.Parse("plantgate.yaml", good, opts)
	if err != nil {
		fmt.Println(err)
		return
	}
	src := c.Sources["mes"].Settings.(*fileConfig)
	fmt.Println(src.Path, src.Format, c.Gateway.Queue.MaxBytes, c.HTTP.AdminToken)
	fmt.Println(c.Flows["all"].Key.Src, "at", c.Flows["all"].Key.Pos)

	bad := []byte(`
gateway: {id: line3}
sources:
  mes: {type: file, colour: blue}
sinks:
  discard: {type: discard}
flows:
  all: {from: mqtt, to: discard}
`)
	_, err = config.Parse("plantgate.yaml", bad, opts)
	fmt.Println(err)
	fmt.Println(config.IsConfigError(err))
	// Output:
	// /var/log/mes.jsonl json 2GiB [REDACTED]
	// payload.order at plantgate.yaml:9:38
	// plantgate.yaml:4:3: sources.mes: missing required key "path"
	// plantgate.yaml:4:21: sources.mes.colour: unknown key "colour" (valid: type, startup, unmatched, path, format)
	// plantgate.yaml:8:15: flows.all.from: source "mqtt" is not defined (defined: mes)
	// true
}
