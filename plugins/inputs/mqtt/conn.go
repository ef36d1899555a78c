package mqtt

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// readBufferSize is the read buffer of a broker connection.
const readBufferSize = 64 << 10

const (
	// writePendingMax is how many bytes a connection holds for its
	// flusher before Write waits, as a blocking write would.
	writePendingMax = 256 << 10
	// writeTimeout bounds one write of the flusher; a broker that reads
	// nothing for this long gets the connection closed.
	writeTimeout = 30 * time.Second
	// closeFlushWait is how long Close lets the flusher send what it
	// holds (the DISCONNECT paho writes just before, acknowledgements).
	closeFlushWait = time.Second
)

// bufferedConn is a broker connection with buffered reads and combined
// writes.
//
// paho reads every packet in three or more small reads (type byte, length
// bytes, body), one system call each on a bare connection; buffered, a
// burst of messages costs one call per 64 KiB.
//
// paho also writes every packet with its own system call, from one
// goroutine. After a commit the source acknowledges up to batch_max
// messages at once, and on loopback or a LAN each 4-byte PUBACK write
// costs the sender and the broker a full trip through the TCP stack: in
// a backlog drain, those writes were the largest single cost of the
// gateway. Here Write only appends the packet to a buffer and wakes a
// flusher goroutine, which sends everything appended since its last
// write in one system call; while it is in that call, the next packets
// gather. Nothing waits for a timer, so a lone packet leaves at once.
//
// bufio.Writer cannot do this: it needs its caller to say when to flush,
// and paho never does. What is lost by not writing synchronously is only
// the error of one write: the flusher closes the connection on a write
// error (paho's reader then reports the loss, as for any broken
// connection) and every later Write returns it. An acknowledgement that
// never left only makes the broker send the message again, which flows
// remove by id.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader

	mu      sync.Mutex
	cond    *sync.Cond // signalled after each flush and on close
	pending []byte     // appended by Write, taken by the flusher
	spare   []byte
	err     error // the first write error; every later Write returns it
	closing bool
	kick    chan struct{} // cap 1: pending has bytes, or closing
	done    chan struct{} // closed when the flusher has ended
}

func newBufferedConn(conn net.Conn) *bufferedConn {
	c := &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, readBufferSize),
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	go c.flusher()
	return c
}

// Read implements net.Conn.
func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write implements net.Conn: it hands p to the flusher. It waits only
// while writePendingMax bytes are already waiting.
func (c *bufferedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && !c.closing && len(c.pending) >= writePendingMax {
		c.cond.Wait()
	}
	switch {
	case c.err != nil:
		err := c.err
		c.mu.Unlock()
		return 0, err
	case c.closing:
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.pending = append(c.pending, p...)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return len(p), nil
}

// SetWriteDeadline implements net.Conn. paho sets a deadline around each
// write it makes; the flusher sets its own around each real write, so
// paho's would only cut it short at a moment paho did not mean.
func (c *bufferedConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline implements net.Conn; it sets the read deadline only (see
// SetWriteDeadline).
func (c *bufferedConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// Close lets the flusher send what it holds, for up to closeFlushWait,
// then closes the connection.
func (c *bufferedConn) Close() error {
	c.mu.Lock()
	c.closing = true
	c.cond.Broadcast()
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	t := time.NewTimer(closeFlushWait)
	select {
	case <-c.done:
	case <-t.C:
	}
	t.Stop()
	return c.Conn.Close()
}

// flusher writes what Write appended, all of it in one system call, until
// the connection is closing and nothing is left, or a write failed.
func (c *bufferedConn) flusher() {
	defer close(c.done)
	for range c.kick {
		for {
			c.mu.Lock()
			if len(c.pending) == 0 {
				closing := c.closing
				c.mu.Unlock()
				if closing {
					return
				}
				break
			}
			buf := c.pending
			c.pending = c.spare[:0]
			c.mu.Unlock()

			err := c.Conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			if err == nil {
				_, err = c.Conn.Write(buf)
			}

			c.mu.Lock()
			c.spare = buf[:0]
			if err != nil {
				c.err = err
			}
			c.cond.Broadcast()
			c.mu.Unlock()
			if err != nil {
				// paho's reader sees the closed connection and reports
				// it lost; Close is safe to call again.
				_ = c.Conn.Close()
				return
			}
		}
	}
}

// openConnection dials the broker as paho does (tcp, tls and websocket
// schemes, ALL_PROXY honoured), buffers reads and combines writes.
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
	return newBufferedConn(conn), nil
}
