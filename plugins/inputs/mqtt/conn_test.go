package mqtt

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// recordingConn is the far end of a connection for bufferedConn's own
// tests: it keeps every Write call's bytes, can hold writes back, and can
// fail them.
type recordingConn struct {
	net.Conn // the unused methods; Read/SetDeadline come from a net.Pipe end

	mu     sync.Mutex
	writes [][]byte
	gate   chan struct{} // when set, each Write waits for a receive
	fail   error
	closed bool
}

func newRecordingConn(t *testing.T) *recordingConn {
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return &recordingConn{Conn: a}
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	gate, fail := c.gate, c.fail
	c.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if fail != nil {
		return 0, fail
	}
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(p))
	c.mu.Unlock()
	return len(p), nil
}

func (c *recordingConn) SetWriteDeadline(time.Time) error { return nil }

func (c *recordingConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return c.Conn.Close()
}

func (c *recordingConn) snapshot() (n int, all []byte, closed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.writes {
		all = append(all, w...)
	}
	return len(c.writes), all, c.closed
}

// While one write is on the wire, the packets written meanwhile leave
// together, in order, in one write.
func TestConnCombinesWritesInOrder(t *testing.T) {
	rc := newRecordingConn(t)
	gate := make(chan struct{})
	rc.gate = gate
	c := newBufferedConn(rc)
	var want []byte
	wrote := make(chan error, 1)
	go func() {
		for i := range 200 {
			p := []byte{0x40, 0x02, byte(i >> 8), byte(i)} // a PUBACK
			want = append(want, p...)
			if n, err := c.Write(p); n != len(p) || err != nil {
				wrote <- fmt.Errorf("write %d: %d, %w", i, n, err)
				return
			}
		}
		wrote <- nil
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		close(gate)
		t.Fatal("Write waited for the wire: packets are not handed off")
	}
	close(gate) // the first write (at most a few packets) goes; the rest follow in one
	eventually(t, 5*time.Second, "every byte written", func() bool {
		_, all, _ := rc.snapshot()
		return len(all) == len(want)
	})
	n, all, _ := rc.snapshot()
	if !bytes.Equal(all, want) {
		t.Fatal("bytes reordered or changed")
	}
	if n > 3 {
		t.Fatalf("200 packets took %d writes; want them combined into at most 3", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// Close sends what is still waiting (paho writes DISCONNECT and closes at
// once) before it closes the connection.
func TestConnCloseFlushesFirst(t *testing.T) {
	rc := newRecordingConn(t)
	gate := make(chan struct{})
	rc.gate = gate
	c := newBufferedConn(rc)
	go func() { time.Sleep(50 * time.Millisecond); close(gate) }()
	_, _ = c.Write([]byte{0x40, 0x02, 0, 1})
	_, _ = c.Write([]byte{0xe0, 0x00}) // DISCONNECT
	_ = c.Close()
	_, all, closed := rc.snapshot()
	if !bytes.Equal(all, []byte{0x40, 0x02, 0, 1, 0xe0, 0x00}) || !closed {
		t.Fatalf("after Close: wrote % x, closed %v", all, closed)
	}
	if _, err := c.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// A failed write closes the connection, so paho's reader reports it
// lost, and every later Write returns the error.
func TestConnWriteErrorClosesAndSticks(t *testing.T) {
	rc := newRecordingConn(t)
	boom := errors.New("connection reset by peer")
	rc.fail = boom
	c := newBufferedConn(rc)
	_, _ = c.Write([]byte{0x40, 0x02, 0, 1})
	eventually(t, 5*time.Second, "connection closed after the failed write", func() bool {
		_, _, closed := rc.snapshot()
		return closed
	})
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read after a failed write: %v, want an error", err)
	}
	if _, err := c.Write([]byte{1}); !errors.Is(err, boom) {
		t.Fatalf("write after the failure: %v, want %v", err, boom)
	}
	_ = c.Close()
}

// With writePendingMax bytes waiting, Write waits as a blocking write
// would, so a broker that stops reading holds paho back.
func TestConnWriteWaitsWhenFull(t *testing.T) {
	rc := newRecordingConn(t)
	gate := make(chan struct{})
	rc.gate = gate
	c := newBufferedConn(rc)
	_, _ = c.Write([]byte{1}) // taken by the flusher, which then waits at the gate
	eventually(t, 5*time.Second, "flusher holding the first write", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) == 0
	})
	big := make([]byte, writePendingMax)
	_, _ = c.Write(big) // fills the buffer
	done := make(chan struct{})
	go func() {
		_, _ = c.Write([]byte{2})
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("Write returned with the buffer full")
	case <-time.After(200 * time.Millisecond):
	}
	close(gate)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Write still waiting after the flusher drained")
	}
	_ = c.Close()
	_, all, _ := rc.snapshot()
	if len(all) != writePendingMax+2 || all[0] != 1 || all[len(all)-1] != 2 {
		t.Fatalf("wrote %d bytes", len(all))
	}
}
