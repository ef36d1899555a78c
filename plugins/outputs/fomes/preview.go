package fomes

import (
	"fmt"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// PreviewRequest implements pipeline.RequestPreviewer: the SendMessage
// call that carries r, its envelope built by Envelope as Write builds it.
// A record Write would dead-letter returns the same reason.
func (s *Sink) PreviewRequest(r pipeline.Record) (pipeline.RequestPreview, error) {
	body, err := s.Envelope(r)
	if err != nil {
		return pipeline.RequestPreview{}, err
	}
	p := s.env.Preview(s.request(r, body))
	p.Note = fmt.Sprintf("a %s message to F&O's message queue %s (SysMessageService SendMessage); _messageContent is the message as JSON text",
		s.messageTypeOf(r), s.cfg.Queue)
	return p, nil
}

// messageTypeOf is the message type r is sent as.
func (s *Sink) messageTypeOf(r pipeline.Record) string {
	if t := s.messageType(r); t != "" {
		return t
	}
	return "(no message type)"
}

var _ pipeline.RequestPreviewer = (*Sink)(nil)
