package mqtt

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// CheckOnline implements pipeline.OnlineChecker for plantgate
// check-config --online: it connects to the broker with the sink's
// address, TLS and credentials (a clean session under the client id with
// "-check" appended) and disconnects; nothing is published.
func (c *Config) CheckOnline(context.Context) (string, error) {
	cc := *c
	cc.ClientID += "-check"
	s, err := New(&cc, pipeline.Env{Log: zerolog.Nop()})
	if err != nil {
		return "", err
	}
	defer func() { _ = s.Close(context.Background()) }()
	if _, err := s.client(); err != nil {
		return "", err
	}
	return fmt.Sprintf("connected to %s as %s and disconnected; nothing published", c.Broker, cc.ClientID), nil
}

var _ pipeline.OnlineChecker = (*Config)(nil)
