package mqtt

import (
	"bufio"
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// dialRaw5 is dialRaw for MQTT 5: it connects with a clean start and the
// given credentials and waits for a successful CONNACK.
func dialRaw5(t *testing.T, addr, id, user, pass string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { _ = conn.Close() })
	body := appendString(nil, "MQTT")
	body = append(body, 5, 0xC2, 0, 60, 0) // level 5; username, password, clean start; keep-alive 60s; no properties
	body = appendString(appendString(appendString(body, id), user), pass)
	c.write(appendPacket(nil, 0x10, body))
	typ, rest, err := c.read(5 * time.Second)
	if err != nil || typ != 0x20 || len(rest) < 2 || rest[1] != 0 {
		t.Fatalf("CONNACK: type %#x %v, err %v", typ, rest, err)
	}
	return c
}

// publish5 sends an MQTT 5 PUBLISH without properties at qos (0, 1 or 2);
// id is ignored at QoS 0.
func (c *rawClient) publish5(topic string, qos byte, id uint16, payload []byte) {
	c.t.Helper()
	body := appendString(nil, topic)
	if qos > 0 {
		body = binary.BigEndian.AppendUint16(body, id)
	}
	body = append(body, 0) // no properties
	c.write(appendPacket(nil, 0x30|qos<<1, append(body, payload...)))
}

// expectAck5 waits for the MQTT 5 acknowledgement of type typ (0x40
// PUBACK, 0x50 PUBREC) for id and returns its reason code.
func (c *rawClient) expectAck5(typ byte, id uint16) byte {
	c.t.Helper()
	got, body, err := c.read(10 * time.Second)
	if err != nil || got&0xf0 != typ || len(body) < 2 || binary.BigEndian.Uint16(body) != id {
		c.t.Fatalf("want ack %#x for %d, got %#x %v (err %v)", typ, id, got, body, err)
	}
	if len(body) == 2 {
		return 0 // the reason code may be left out when it is 0x00
	}
	return body[2]
}
