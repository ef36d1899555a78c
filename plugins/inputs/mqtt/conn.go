package mqtt

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"os"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// readBufferSize is the read buffer of a broker connection.
const readBufferSize = 64 << 10

// bufferedConn reads a connection through a buffer. paho reads every
// packet in three or more small reads (type byte, length bytes, body), one
// system call each on a bare connection; buffered, a burst of messages
// costs one call per 64 KiB.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

// Read implements net.Conn.
func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// openConnection dials the broker as paho does (tcp, tls and websocket
// schemes, ALL_PROXY honoured) and buffers reads.
func openConnection(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	d := o.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: 30 * time.Second}
	}
	var (
		conn net.Conn
		err  error
	)
	switch uri.Scheme {
	case "ws", "wss":
		u := *uri
		u.User = nil
		var tc *tls.Config
		if uri.Scheme == "wss" {
			tc = o.TLSConfig
		}
		conn, err = paho.NewWebsocket(u.String(), tc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	case "mqtt", "tcp":
		conn, err = proxy.FromEnvironmentUsing(d).Dial("tcp", uri.Host)
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		tc := o.TLSConfig
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if os.Getenv("all_proxy") == "" && os.Getenv("ALL_PROXY") == "" {
			conn, err = tls.DialWithDialer(d, "tcp", uri.Host, tc)
			break
		}
		var raw net.Conn
		if raw, err = proxy.FromEnvironmentUsing(d).Dial("tcp", uri.Host); err != nil {
			break
		}
		if tc.ServerName == "" {
			tc = tc.Clone()
			tc.ServerName = uri.Hostname()
		}
		tlsConn := tls.Client(raw, tc)
		if err = tlsConn.Handshake(); err != nil {
			_ = raw.Close()
			break
		}
		conn = tlsConn
	default:
		err = errors.New("unknown protocol " + uri.Scheme)
	}
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, readBufferSize)}, nil
}
