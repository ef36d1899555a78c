package mqtt

import (
	"fmt"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// PreviewRequest implements pipeline.RequestPreviewer: the PUBLISH that
// carries r, its topic and payload built by Topic and Payload as Write
// builds them. A record Write would dead-letter returns the same reason.
func (s *Sink) PreviewRequest(r pipeline.Record) (pipeline.RequestPreview, error) {
	topic, err := s.Topic(r)
	if err != nil {
		return pipeline.RequestPreview{}, err
	}
	body, err := s.Payload(r)
	if err != nil {
		return pipeline.RequestPreview{}, fmt.Errorf("encode the payload: %w", err)
	}
	return pipeline.RequestPreview{Method: "PUBLISH", Path: topic, Body: body,
		Note: fmt.Sprintf("an MQTT PUBLISH to %s at QoS %d, retained %v, acked after the broker's acknowledgement", s.cfg.Broker, s.cfg.QoS, s.retain)}, nil
}

var _ pipeline.RequestPreviewer = (*Sink)(nil)
