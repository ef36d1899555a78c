package mqtt

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// rawClient speaks just enough MQTT 3.1.1 to see exactly which packets a
// broker sends: paho hides a missing PUBACK (it completes the token of a
// resent message on reconnect).
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendPacket(b []byte, typ byte, body []byte) []byte {
	b = append(b, typ)
	n := len(body)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			break
		}
	}
	return append(b, body...)
}

// dialRaw connects with a clean session and the given credentials and
// waits for a successful CONNACK.
func dialRaw(t *testing.T, addr, id, user, pass string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { _ = conn.Close() })
	body := appendString(nil, "MQTT")
	body = append(body, 4, 0xC2, 0, 60) // level 4; username, password, clean session; keep-alive 60s
	body = appendString(appendString(appendString(body, id), user), pass)
	c.write(appendPacket(nil, 0x10, body))
	typ, rest, err := c.read(5 * time.Second)
	if err != nil || typ != 0x20 || len(rest) != 2 || rest[1] != 0 {
		t.Fatalf("CONNACK: type %#x %v, err %v", typ, rest, err)
	}
	return c
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// publish sends a QoS 1 PUBLISH.
func (c *rawClient) publish(topic string, id uint16, dup bool, payload []byte) {
	c.t.Helper()
	body := binary.BigEndian.AppendUint16(appendString(nil, topic), id)
	typ := byte(0x32)
	if dup {
		typ |= 0x08
	}
	c.write(appendPacket(nil, typ, append(body, payload...)))
}

// read returns the next packet's type byte and body, or an error (a
// timeout, or io.EOF when the broker closed the connection).
func (c *rawClient) read(timeout time.Duration) (byte, []byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	typ, err := c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for {
		d, err := c.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mult
		mult *= 128
		if d&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, nil, err
	}
	return typ, body, nil
}

// expectNothing fails if any packet arrives within d.
func (c *rawClient) expectNothing(d time.Duration, why string) {
	c.t.Helper()
	typ, body, err := c.read(d)
	if err == nil {
		c.t.Fatalf("%s: got packet %#x %v", why, typ, body)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		c.t.Fatalf("%s: %v", why, err)
	}
}

// expectPuback waits for the PUBACK of id.
func (c *rawClient) expectPuback(id uint16) {
	c.t.Helper()
	typ, body, err := c.read(10 * time.Second)
	if err != nil || typ != 0x40 || len(body) < 2 || binary.BigEndian.Uint16(body) != id {
		c.t.Fatalf("want PUBACK %d, got %#x %v (err %v)", id, typ, body, err)
	}
}

// expectClosed reads until the broker closes the connection and fails on
// a PUBACK.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	for {
		typ, body, err := c.read(10 * time.Second)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.t.Fatal("the broker did not close the connection")
			}
			return
		}
		if typ&0xf0 == 0x40 {
			c.t.Fatalf("got PUBACK %v, but the message was not committed", body)
		}
	}
}
