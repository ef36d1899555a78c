package opcua

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
	"github.com/rs/zerolog"
)

// Dial opens a session to cfg's endpoint the way the source does (the
// same endpoint choice, certificate checks and PKI folder), for the
// browse and read commands. Nodes and rules of cfg are not used. The
// caller closes the client.
func Dial(ctx context.Context, cfg *Config, pkiDir, appURI string) (*opcua.Client, error) {
	c := *cfg
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = time.Minute
	}
	if c.PublishingInterval <= 0 {
		c.PublishingInterval = time.Second
	}
	if c.KeepAliveCount <= 0 {
		c.KeepAliveCount = 10
	}
	s := &Source{cfg: c, log: zerolog.Nop(), pki: PKI{Dir: pkiDir}, appURI: appURI, now: time.Now, name: "cli", m: newMetrics(nil, "cli")}
	if _, _, _, err := s.pki.OwnCertificate(appURI); err != nil {
		return nil, fmt.Errorf("application certificate: %w", err)
	}
	cl, _, err := s.connect(ctx)
	return cl, err
}

// NodeInfo is one node as browse lists it.
type NodeInfo struct {
	// ID is the node's nsu= id, ready for the config.
	ID string `json:"id"`
	// Path is the browse path from the start node.
	Path  string `json:"path"`
	Class string `json:"class"`
	// DataType and Access are set for variables.
	DataType string `json:"data_type,omitempty"`
	Access   string `json:"access,omitempty"`
	Value    any    `json:"value,omitempty"`
}

// Browse lists the nodes below start (nil: the Objects folder) down to
// depth levels, with their nsu= ids, and for variables their data type,
// access and current value.
func Browse(ctx context.Context, c *opcua.Client, start *ua.NodeID, depth int) ([]NodeInfo, error) {
	if start == nil {
		start = ua.NewNumericNodeID(0, id.ObjectsFolder)
	}
	ns, err := c.NamespaceArray(ctx)
	if err != nil {
		return nil, err
	}
	var out []NodeInfo
	var vars []int
	var varIDs []*ua.NodeID
	seen := map[string]bool{start.String(): true}
	type todo struct {
		id   *ua.NodeID
		path string
		d    int
	}
	queue := []todo{{start, "", 0}}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		req := &ua.BrowseRequest{NodesToBrowse: []*ua.BrowseDescription{{
			NodeID: cur.id, BrowseDirection: ua.BrowseDirectionForward,
			ReferenceTypeID: ua.NewNumericNodeID(0, id.HierarchicalReferences), IncludeSubtypes: true,
			NodeClassMask: uint32(ua.NodeClassObject | ua.NodeClassVariable), ResultMask: uint32(ua.BrowseResultMaskAll),
		}}, RequestedMaxReferencesPerNode: 1000}
		res, err := c.Browse(ctx, req)
		if err != nil {
			return out, fmt.Errorf("browse %s: %w", cur.id, err)
		}
		for _, r := range res.Results {
			if r.StatusCode != ua.StatusOK {
				continue
			}
			for _, ref := range r.References {
				if ref.NodeID == nil || ref.NodeID.NodeID == nil {
					continue
				}
				nid := ref.NodeID.NodeID
				if seen[nid.String()] {
					continue
				}
				seen[nid.String()] = true
				name := ""
				if ref.BrowseName != nil {
					name = ref.BrowseName.Name
				}
				path := name
				if cur.path != "" {
					path = cur.path + "/" + name
				}
				info := NodeInfo{ID: ExpandedString(nid, ns), Path: path, Class: ref.NodeClass.String()}
				if ref.NodeClass == ua.NodeClassVariable {
					vars = append(vars, len(out))
					varIDs = append(varIDs, nid)
				}
				out = append(out, info)
				// The server's own nodes (namespace 0) are not descended into.
				if cur.d+1 < depth && nid.Namespace() != 0 {
					queue = append(queue, todo{nid, path, cur.d + 1})
				}
			}
		}
	}
	for i := 0; i < len(varIDs); i += maxPerCall {
		j := min(i+maxPerCall, len(varIDs))
		var rv []*ua.ReadValueID
		for _, nid := range varIDs[i:j] {
			rv = append(rv, &ua.ReadValueID{NodeID: nid, AttributeID: ua.AttributeIDDataType}, &ua.ReadValueID{NodeID: nid, AttributeID: ua.AttributeIDAccessLevel}, &ua.ReadValueID{NodeID: nid, AttributeID: ua.AttributeIDValue})
		}
		res, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: rv})
		if err != nil {
			return out, fmt.Errorf("read attributes: %w", err)
		}
		for k := range varIDs[i:j] {
			if 3*k+2 >= len(res.Results) {
				break
			}
			info := &out[vars[i+k]]
			info.DataType = dataTypeName(res.Results[3*k])
			info.Access = accessName(res.Results[3*k+1])
			if dv := res.Results[3*k+2]; dv != nil && dv.Value != nil && dv.Status == ua.StatusOK {
				info.Value = plainValue(dv.Value.Value())
			}
		}
	}
	return out, nil
}

func dataTypeName(dv *ua.DataValue) string {
	if dv == nil || dv.Value == nil {
		return ""
	}
	nid, ok := dv.Value.Value().(*ua.NodeID)
	if !ok {
		return ""
	}
	if nid.Namespace() == 0 && nid.Type() != ua.NodeIDTypeString {
		if n := id.Name(nid.IntID()); n != "" {
			return n
		}
	}
	return nid.String()
}

func accessName(dv *ua.DataValue) string {
	if dv == nil || dv.Value == nil {
		return ""
	}
	var a uint8
	switch v := dv.Value.Value().(type) {
	case uint8:
		a = v
	default:
		return ""
	}
	switch {
	case a&uint8(ua.AccessLevelTypeCurrentRead) != 0 && a&uint8(ua.AccessLevelTypeCurrentWrite) != 0:
		return "read-write"
	case a&uint8(ua.AccessLevelTypeCurrentRead) != 0:
		return "read"
	case a&uint8(ua.AccessLevelTypeCurrentWrite) != 0:
		return "write"
	}
	return "none"
}

// ReadNode reads one node's value, resolving an nsu= id first.
func ReadNode(ctx context.Context, c *opcua.Client, node string) (*ua.DataValue, string, error) {
	ref, err := ParseNodeRef(node)
	if err != nil {
		return nil, "", err
	}
	ns, err := c.NamespaceArray(ctx)
	if err != nil {
		return nil, "", err
	}
	nid, err := ref.Resolve(ns)
	if err != nil {
		return nil, "", err
	}
	res, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: nid, AttributeID: ua.AttributeIDValue}}, TimestampsToReturn: ua.TimestampsToReturnBoth})
	if err != nil {
		return nil, "", err
	}
	if len(res.Results) != 1 {
		return nil, "", errors.New("the server returned no value")
	}
	return res.Results[0], nid.String(), nil
}

// Value returns a data value's value in plain Go form, and its quality.
func Value(dv *ua.DataValue) (any, string) {
	code := ua.StatusOK
	if dv.EncodingMask&ua.DataValueStatusCode != 0 {
		code = dv.Status
	}
	var v any
	if dv.Value != nil {
		v = plainValue(dv.Value.Value())
	}
	return v, qualityName(code)
}
