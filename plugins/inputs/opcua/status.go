package opcua

import (
	"crypto/x509"
	"time"
)

// Status implements pipeline.StatusReporter: the connection, the
// subscription's sequence, recorded gaps, each node's last value, quality
// and error, each rule's events and error, and the certificates' expiry
// (a warning from cert_warning before it).
func (s *Source) Status() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UTC()
	var warnings []string
	nodes := map[string]any{}
	for _, it := range s.items {
		n := map[string]any{"node": it.ref.String(), "monitored": it.monitored}
		if it.resolved != "" {
			n["resolved"] = it.resolved
		}
		if !it.lastAt.IsZero() {
			n["last_value_at"] = it.lastAt
			n["value"] = it.lastValue
			n["quality"] = it.quality
			n["values"] = it.changes
		}
		if it.lastErr != "" {
			n["last_error"] = it.lastErr
			n["last_error_at"] = it.lastErrAt
		}
		nodes[it.name] = n
	}
	rs := map[string]any{}
	for _, r := range s.rules {
		m := map[string]any{"kind": r.Kind, "value": r.Value, "events": s.st.ruleEvents[r.Name]}
		if e := s.st.ruleErr[r.Name]; e != "" {
			m["last_error"] = e
		}
		rs[r.Name] = m
	}
	certs := map[string]any{}
	for name, c := range map[string]*x509.Certificate{"own": s.st.ownCert, "server": s.st.serverCert} {
		if c == nil {
			continue
		}
		left := c.NotAfter.Sub(now)
		m := map[string]any{"subject": c.Subject.String(), "expires": c.NotAfter.UTC(), "expires_in_days": int(left.Hours() / 24)}
		if name == "server" {
			m["fingerprint"] = s.st.serverFP
		}
		switch {
		case left <= 0:
			m["warning"] = "expired"
			warnings = append(warnings, "the "+name+" certificate expired on "+c.NotAfter.UTC().Format(time.DateOnly))
		case left < s.cfg.CertWarning:
			m["warning"] = "expires soon"
			warnings = append(warnings, "the "+name+" certificate expires on "+c.NotAfter.UTC().Format(time.DateOnly))
		}
		certs[name] = m
	}
	out := map[string]any{
		"endpoint":              s.cfg.Endpoint,
		"mode":                  s.cfg.Mode,
		"state":                 s.st.state,
		"security":              map[string]any{"policy": s.st.policy, "mode": s.st.mode, "offered": s.st.offered},
		"connects":              s.st.connects,
		"sessions_created":      s.st.created,
		"sessions_reactivated":  s.st.restores,
		"subscriptions_created": s.st.subsCreated,
		"republished":           s.st.republished,
		"watchdog_rebuilds":     s.st.watchdog,
		"values":                s.st.values,
		"events":                s.st.events,
		"subscription":          map[string]any{"id": s.st.subID, "next_seq": s.st.nextSeq, "messages": s.st.messages, "last_publish_at": s.st.lastPublishAt},
		"gaps":                  map[string]any{"count": s.st.gapCount, "recent": append([]Gap(nil), s.st.gaps...)},
		"nodes":                 nodes,
		"rules":                 rs,
		"certificates":          certs,
	}
	if !s.st.connectedAt.IsZero() {
		out["connected_at"] = s.st.connectedAt
	}
	if s.st.lastErr != "" {
		out["last_error"] = s.st.lastErr
		out["last_error_at"] = s.st.lastErrAt
	}
	if len(warnings) > 0 {
		out["warnings"] = warnings
	}
	return out
}
