package foodata

import (
	"fmt"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// PreviewRequest implements pipeline.RequestPreviewer: the request that
// writes r, built by the code Write uses (mapRecord, requests), and for
// an upsert the PATCH that follows when F&O answers that the entity
// exists. A record Write would dead-letter returns the same reason.
func (s *Sink) PreviewRequest(r pipeline.Record) (pipeline.RequestPreview, error) {
	e, err := s.mapRecord(r)
	if err != nil {
		return pipeline.RequestPreview{}, fmt.Errorf("map record to %s: %w", s.cfg.Entity, err)
	}
	first, then := s.requests(r, e, s.method())
	p := s.env.Preview(first)
	switch {
	case then != nil:
		p.Note = fmt.Sprintf("upsert: a POST creates the %s entity; when F&O answers that it exists, the PATCH below updates it", s.cfg.Entity)
		p.Then = []pipeline.RequestPreview{s.env.Preview(then)}
	case first.Method == "PATCH":
		p.Note = fmt.Sprintf("update: a PATCH of the %s entity by its key", s.cfg.Entity)
	default:
		p.Note = fmt.Sprintf("create: a POST of a new %s entity", s.cfg.Entity)
	}
	if s.cfg.Batch.Enabled {
		p.Note += "; with batch.enabled, records written together go as these operations in one $batch request"
	}
	return p, nil
}

var _ pipeline.RequestPreviewer = (*Sink)(nil)
