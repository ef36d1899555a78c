// Package opcuasim is an OPC UA line simulator on the gopcua server: a
// production line's good and scrap counters, machine state, running flag,
// current order and item, in its own namespace, optionally behind
// Basic256Sha256 security. cmd/opcua-simulator runs it for make demo; the
// opcua source's tests run it in-process and as a process they kill.
package opcuasim

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
)

// DefaultNamespace is the simulator's namespace URI.
const DefaultNamespace = "urn:plantgate:line-simulator"

// Options configure a simulator.
type Options struct {
	// Host and Port to listen on (Port 0: a free port).
	Host string
	Port int
	// Secure offers Basic256Sha256, Aes128_Sha256_RsaOaep and
	// Aes256_Sha256_RsaPss with Sign and SignAndEncrypt; None is offered
	// only with AllowNone.
	Secure, AllowNone bool
	// PKIDir keeps the server's certificate (cert.der, key.pem), so a
	// restarted simulator presents the same one. Empty: a new one each
	// start.
	PKIDir string
	// Namespace is the namespace URI (DefaultNamespace if empty).
	Namespace string
	// Shift registers that many other namespaces before the simulator's,
	// so its index changes (a server that renumbered its namespaces).
	Shift int
	// Line prefixes the node names (Line3.GoodCount); default Line3.
	Line string
	// Extra adds that many UInt32 variables Bench.0 .. Bench.N-1.
	Extra int
	// Username and Password, if set, enable username login too. The
	// gopcua server accepts any password.
	Username, Password string
	// CertificateLogin enables X.509 user certificate login too.
	CertificateLogin bool
	// Advertise lists more host:port addresses the server's endpoints are
	// offered under (a proxy in front of it).
	Advertise []string
	// Logger receives the server's log lines (nil: none).
	Logger server.Logger
}

// Sim is a running simulator.
type Sim struct {
	srv      *server.Server
	ns       *server.NodeNameSpace
	endpoint string
	cert     []byte
	mu       sync.Mutex
	nodes    map[string]*server.Node
	extra    []*server.Node
	// vals holds each node's value; the nodes read it through a value
	// function under mu (the gopcua server's Node.SetAttribute is not safe
	// against its own readers).
	vals map[*server.Node]*ua.DataValue
}

// Node names under the line prefix.
const (
	Good    = "GoodCount"
	Scrap   = "ScrapCount"
	State   = "State"
	Running = "Running"
	Order   = "Order"
	Item    = "Item"
)

// FreePort returns a TCP port that was free a moment ago.
func FreePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// Start starts a simulator.
func Start(ctx context.Context, o Options) (*Sim, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Line == "" {
		o.Line = "Line3"
	}
	if o.Port == 0 {
		p, err := FreePort(o.Host)
		if err != nil {
			return nil, err
		}
		o.Port = p
	}
	der, key, err := serverCert(o.PKIDir, o.Host)
	if err != nil {
		return nil, err
	}
	opts := []server.Option{
		server.EndPoint(o.Host, o.Port),
		server.PrivateKey(key), server.Certificate(der),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.ServerName("plantgate line simulator"),
	}
	for _, a := range o.Advertise {
		h, p, err := net.SplitHostPort(a)
		if err != nil {
			return nil, err
		}
		pn, _ := strconv.Atoi(p)
		opts = append(opts, server.EndPoint(h, pn))
	}
	if o.Logger != nil {
		opts = append(opts, server.SetLogger(o.Logger))
	}
	if !o.Secure || o.AllowNone {
		opts = append(opts, server.EnableSecurity("None", ua.MessageSecurityModeNone))
	}
	if o.Secure {
		for _, p := range []string{"Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"} {
			opts = append(opts, server.EnableSecurity(p, ua.MessageSecurityModeSign), server.EnableSecurity(p, ua.MessageSecurityModeSignAndEncrypt))
		}
	}
	if o.Username != "" {
		opts = append(opts, server.EnableAuthMode(ua.UserTokenTypeUserName))
	}
	if o.CertificateLogin {
		opts = append(opts, server.EnableAuthMode(ua.UserTokenTypeCertificate))
	}
	srv := server.New(opts...)
	for i := 0; i < o.Shift; i++ {
		server.NewNodeNameSpace(srv, "urn:plantgate:simulator:other:"+strconv.Itoa(i))
	}
	ns := server.NewNodeNameSpace(srv, o.Namespace)
	root, _ := srv.Namespace(0)
	root.Objects().AddRef(ns.Objects(), id.HasComponent, true)
	s := &Sim{srv: srv, ns: ns, endpoint: fmt.Sprintf("opc.tcp://%s:%d", o.Host, o.Port), cert: der, nodes: map[string]*server.Node{}, vals: map[*server.Node]*ua.DataValue{}}
	variable := func(name string, v any) *server.Node {
		var n *server.Node
		n = ns.AddNewVariableStringNode(name, func() *ua.DataValue {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.vals[n]
		})
		s.vals[n] = dataValue(v)
		ns.Objects().AddRef(n, id.HasComponent, true)
		return n
	}
	add := func(name string, v any) *server.Node { return variable(o.Line+"."+name, v) }
	s.nodes[Good] = add(Good, uint32(0))
	s.nodes[Scrap] = add(Scrap, uint32(0))
	s.nodes[State] = add(State, "Stopped")
	s.nodes[Running] = add(Running, false)
	s.nodes[Order] = add(Order, "")
	s.nodes[Item] = add(Item, "")
	for i := 0; i < o.Extra; i++ {
		s.extra = append(s.extra, variable("Bench."+strconv.Itoa(i), uint32(0)))
	}
	if err := srv.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Endpoint is the simulator's opc.tcp URL.
func (s *Sim) Endpoint() string { return s.endpoint }

// Certificate is the server's DER certificate.
func (s *Sim) Certificate() []byte { return s.cert }

// Server is the gopcua server underneath.
func (s *Sim) Server() *server.Server { return s.srv }

// Set changes a line value (Good, Scrap, State, Running, Order, Item) and
// notifies subscribers.
func (s *Sim) Set(name string, v any) {
	n := s.nodes[name]
	if n == nil {
		return
	}
	s.setNode(n, v)
}

func (s *Sim) setNode(n *server.Node, v any) {
	dv := dataValue(v)
	s.mu.Lock()
	s.vals[n] = dv
	s.mu.Unlock()
	s.ns.ChangeNotification(n.ID())
}

func dataValue(v any) *ua.DataValue {
	now := time.Now()
	return &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp, Value: ua.MustVariant(v), SourceTimestamp: now, ServerTimestamp: now}
}

// SetExtra sets the benchmark variable i.
func (s *Sim) SetExtra(i int, v uint32) { s.setNode(s.extra[i], v) }

// Close stops the server. With a client connected, the gopcua server takes
// up to 10 s to close its channels.
func (s *Sim) Close() error { return s.srv.Close() }

// serverCert loads the certificate kept in dir, or makes one (and keeps
// it when dir is set).
func serverCert(dir, host string) ([]byte, *rsa.PrivateKey, error) {
	if dir != "" {
		der, err1 := os.ReadFile(filepath.Join(dir, "cert.der"))
		kb, err2 := os.ReadFile(filepath.Join(dir, "key.pem"))
		if err1 == nil && err2 == nil {
			blk, _ := pem.Decode(kb)
			if blk == nil {
				return nil, nil, errors.New("key.pem is not PEM")
			}
			key, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
			return der, key, err
		}
	}
	der, key, err := generate("urn:plantgate:line-simulator:server", host)
	if err != nil {
		return nil, nil, err
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "cert.der"), der, 0o600); err != nil {
			return nil, nil, err
		}
	}
	return der, key, nil
}
