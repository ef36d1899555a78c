package opcua

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gopcua/opcua/ua"
)

// NodeRef is a configured node id: by namespace URI (nsu=URI;s=Name), by
// namespace index (ns=2;s=Name) or in namespace 0 (i=2258). A namespace
// URI is resolved to the server's current index after every connect.
type NodeRef struct {
	// URI is the namespace URI of an nsu= id, empty otherwise.
	URI string
	// ID is the node id with the namespace part replaced by ns=0, or the
	// whole id when it names an index.
	id *ua.NodeID
	// text is the id as configured.
	text string
}

// ParseNodeRef parses a node id as plant IT writes it in the config.
func ParseNodeRef(s string) (NodeRef, error) {
	if s == "" {
		return NodeRef{}, errors.New("empty node id")
	}
	if strings.ContainsAny(s, "\x00\n\r") {
		return NodeRef{}, fmt.Errorf("node id %q contains a control character", s)
	}
	ref := NodeRef{text: s}
	rest := s
	if strings.HasPrefix(s, "nsu=") {
		uri, idPart, ok := strings.Cut(strings.TrimPrefix(s, "nsu="), ";")
		if !ok || uri == "" {
			return NodeRef{}, fmt.Errorf("node id %q: want nsu=<namespace URI>;<i=, s=, g= or b= identifier>", s)
		}
		ref.URI = uri
		rest = "ns=0;" + idPart
	}
	id, err := ua.ParseNodeID(rest)
	if err != nil {
		return NodeRef{}, fmt.Errorf("node id %q: %w", s, err)
	}
	if id.Type() == ua.NodeIDTypeString && id.StringID() == "" {
		return NodeRef{}, fmt.Errorf("node id %q: empty string identifier", s)
	}
	if ref.URI != "" && !strings.Contains(rest[len("ns=0;"):], "=") {
		// "nsu=urn:x;Name": gopcua would read it as s=Name in namespace 0;
		// say what is meant.
		return NodeRef{}, fmt.Errorf("node id %q: the identifier needs its type: s=, i=, g= or b=", s)
	}
	ref.id = id
	return ref, nil
}

// String returns the id as configured.
func (r NodeRef) String() string { return r.text }

// Resolve returns the node id for the server's namespace table.
func (r NodeRef) Resolve(namespaces []string) (*ua.NodeID, error) {
	if r.id == nil {
		return nil, errors.New("unparsed node id")
	}
	if r.URI == "" {
		if int(r.id.Namespace()) >= len(namespaces) && len(namespaces) > 0 {
			return nil, fmt.Errorf("node id %s: the server has no namespace %d (its table: %s)", r.text, r.id.Namespace(), strings.Join(namespaces, ", "))
		}
		return r.id, nil
	}
	for i, u := range namespaces {
		if u == r.URI {
			id, err := ua.ParseNodeID(withNamespace(r.id, i))
			if err != nil {
				return nil, fmt.Errorf("node id %s: %w", r.text, err)
			}
			return id, nil
		}
	}
	return nil, fmt.Errorf("node id %s: the server's namespace table has no %q (it has: %s)", r.text, r.URI, strings.Join(namespaces, ", "))
}

// withNamespace prints id in namespace ns, in the text form ParseNodeID
// reads (which picks the right encoding for the index).
func withNamespace(id *ua.NodeID, ns int) string {
	s := id.String()
	if _, after, ok := strings.Cut(s, ";"); ok && strings.HasPrefix(s, "ns=") {
		s = after
	}
	return fmt.Sprintf("ns=%d;%s", ns, s)
}

// ExpandedString returns id as an nsu= id for the namespace table, the
// form browse prints for the config.
func ExpandedString(id *ua.NodeID, namespaces []string) string {
	ns := int(id.Namespace())
	s := id.String()
	if _, after, ok := strings.Cut(s, ";"); ok && strings.HasPrefix(s, "ns=") {
		s = after
	}
	if ns == 0 || ns >= len(namespaces) {
		if ns == 0 {
			return s
		}
		return id.String()
	}
	return "nsu=" + namespaces[ns] + ";" + s
}
