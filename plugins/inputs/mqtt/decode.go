package mqtt

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/plantgate/plantgate/internal/codec"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// Meta keys of a message, visible to flow expressions as meta.<key>.
const (
	MetaTopic      = "topic"
	MetaQoS        = "qos"
	MetaRetained   = "retained"
	MetaReceivedAt = "received_at"
	MetaMessageID  = "message_id"
	MetaDuplicate  = "duplicate"
	MetaBrokerTime = "broker_time"
	MetaClientID   = "client_id"
	MetaUsername   = "username"
	MetaUserProps  = "user_properties"
	MetaTruncated  = "truncated"
)

// publish is what both modes know about one received PUBLISH.
type publish struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retained bool
	Dup      bool
	PacketID uint16
	// Received is when plantgate read the message.
	Received time.Time
	// BrokerTime is when the broker accepted the message, where known
	// (embedded broker); zero otherwise.
	BrokerTime time.Time
	// ClientID and Username name the publisher (embedded broker only).
	ClientID, Username string
	// UserProps are MQTT 5 user properties (embedded broker only).
	UserProps map[string]any
}

// decoder turns publishes into pipeline messages.
type decoder struct {
	dec      codec.Decoder
	maxBytes int
}

func newDecoder(c *Config) (*decoder, error) {
	d, err := codec.New(codec.Options{Format: c.Format, CSVHeader: c.CSVHeader, CSVDelimiter: c.CSVDelimiter, MaxBytes: c.MaxPayloadBytes})
	if err != nil {
		return nil, err
	}
	return &decoder{dec: d, maxBytes: c.MaxPayloadBytes}, nil
}

// message decodes p. It never fails: a payload that does not decode, or is
// larger than the limit, yields a message with DecodeErr set, which the
// engine dead-letters with its raw bytes. Raw is p.Payload itself (not a
// copy), cut to the size limit.
func (d *decoder) message(p publish) pipeline.Message {
	// Sized to what it gets: up to eight entries fit one group of Go's
	// map, which halves what a message in flight holds.
	n := 5
	for _, extra := range []bool{p.QoS > 0, !p.BrokerTime.IsZero(), p.ClientID != "", p.Username != "", len(p.UserProps) > 0} {
		if extra {
			n++
		}
	}
	meta := make(map[string]any, n)
	meta[MetaTopic] = p.Topic
	meta[MetaQoS] = int(p.QoS)
	meta[MetaRetained] = p.Retained
	meta[MetaReceivedAt] = p.Received
	meta[MetaDuplicate] = p.Dup
	if p.QoS > 0 {
		meta[MetaMessageID] = int(p.PacketID)
	}
	if !p.BrokerTime.IsZero() {
		meta[MetaBrokerTime] = p.BrokerTime
	}
	if p.ClientID != "" {
		meta[MetaClientID] = p.ClientID
	}
	if p.Username != "" {
		meta[MetaUsername] = p.Username
	}
	if len(p.UserProps) > 0 {
		meta[MetaUserProps] = p.UserProps
	}
	m := pipeline.Message{Raw: p.Payload, Meta: meta, Time: p.Received}
	m.Payload, m.DecodeErr = d.dec.Decode(p.Payload)
	if m.DecodeErr != nil {
		m.Payload = nil
		if errors.Is(m.DecodeErr, codec.ErrTooLarge) && d.maxBytes > 0 && len(m.Raw) > d.maxBytes {
			m.Raw = m.Raw[:d.maxBytes]
			meta[MetaTruncated] = true
			m.DecodeErr = fmt.Errorf("payload of %d bytes on topic %q exceeds max_payload_bytes %d (first %d bytes kept)",
				len(p.Payload), p.Topic, d.maxBytes, d.maxBytes)
		}
	}
	return m
}

// match reports whether topic matches the MQTT topic filter (a $share
// prefix is ignored). Filters starting with a wildcard do not match topics
// starting with $ [MQTT-4.7.2-1].
func match(filter, topic string) bool {
	filter = stripShare(filter)
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "#") || strings.HasPrefix(filter, "+")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" also matches "a".
			return fmore == tmore || (fmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}

// covers reports whether every topic matched by filter sub is also matched
// by filter allowed, so a client allowed "allowed" may subscribe to "sub".
func covers(allowed, sub string) bool {
	allowed, sub = stripShare(allowed), stripShare(sub)
	if strings.HasPrefix(sub, "$") && (strings.HasPrefix(allowed, "#") || strings.HasPrefix(allowed, "+")) {
		return false // a wildcard never reaches $ topics
	}
	for {
		al, arest, amore := strings.Cut(allowed, "/")
		if al == "#" {
			return true
		}
		sl, srest, smore := strings.Cut(sub, "/")
		switch {
		case sl == "#":
			return false // sub reaches deeper than allowed
		case al == "+":
		case sl == "+" || al != sl:
			return false
		}
		if !amore || !smore {
			return amore == smore || (amore && arest == "#")
		}
		allowed, sub = arest, srest
	}
}

func stripShare(f string) string {
	if strings.HasPrefix(f, "$share/") {
		parts := strings.SplitN(f, "/", 3)
		if len(parts) == 3 {
			return parts[2]
		}
	}
	return f
}

// Redecode implements pipeline.Redecoder: a replayed message is decoded
// with the source's current format settings.
func (s *Source) Redecode(raw []byte, meta map[string]any) (any, error) {
	topic, _ := meta[MetaTopic].(string)
	m := s.dec.message(publish{Topic: topic, Payload: raw})
	return m.Payload, m.DecodeErr
}

var _ pipeline.Redecoder = (*Source)(nil)
