package foevents

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// CheckOnline implements pipeline.OnlineChecker for plantgate
// check-config --online: it lists the blob endpoint's container (one
// blob at most); nothing is read or deleted. The HTTPS endpoint and the
// OData poll have nothing to check here (the F&O environment is checked
// on its own).
func (c *Config) CheckOnline(ctx context.Context) (string, error) {
	if c.Blob == nil {
		return "no blob endpoint to check", nil
	}
	cc := *c
	cc.Poll = nil // the environment is checked with the fo: section
	s, err := New(&cc, pipeline.Env{Log: zerolog.Nop()})
	if err != nil {
		return "", err
	}
	if err := s.Probe(ctx); err != nil {
		return "", err
	}
	return fmt.Sprintf("listed container %s at %s", c.Blob.Container, c.Blob.URL), nil
}

var _ pipeline.OnlineChecker = (*Config)(nil)
