package mqtt

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// PreviewMessage implements pipeline.MessagePreviewer: the message the
// source emits for payload published on topic, decoded by the source's
// decoder with the meta a broker delivery has (QoS from the topic's
// subscription). It fails for a topic the source does not receive.
func (c *Config) PreviewMessage(topic string, payload []byte, at time.Time) (pipeline.Message, error) {
	cc := *c
	setDefaults(&cc)
	if topic == "" {
		return pipeline.Message{}, errors.New("an mqtt source receives messages on a topic: give one with --topic")
	}
	qos, ok := cc.receives(topic)
	if !ok {
		return pipeline.Message{}, fmt.Errorf("the source does not receive topic %q: %s", topic, cc.topicsText())
	}
	dec, err := newDecoder(&cc)
	if err != nil {
		return pipeline.Message{}, err
	}
	m := dec.message(publish{Topic: topic, Payload: payload, QoS: qos, Received: at})
	return m, nil
}

// receives reports whether the source takes messages on topic and at
// which QoS: one of its topics matches it, or, for an embedded broker
// without topics, any topic but the broker's own $ topics.
func (c *Config) receives(topic string) (byte, bool) {
	if len(c.Topics) == 0 {
		return byte(c.QoS), c.Embedded != nil && !strings.HasPrefix(topic, "$")
	}
	for _, t := range c.Topics {
		if match(t.Filter, topic) {
			return t.qos(c.QoS), true
		}
	}
	return 0, false
}

// topicsText lists the source's topics for messages.
func (c *Config) topicsText() string {
	if len(c.Topics) == 0 {
		if c.Embedded != nil {
			return "the embedded broker takes every topic but $ topics"
		}
		return "it has no topics"
	}
	fs := make([]string, len(c.Topics))
	for i, t := range c.Topics {
		fs[i] = t.Filter
	}
	return "its topics are " + strings.Join(fs, ", ")
}

var _ pipeline.MessagePreviewer = (*Config)(nil)
