//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package d365

import (
	"errors"
	"net"
	"syscall"
)

// peerClosed peeks at a TCP connection without blocking and without
// consuming: true when the peer's end of file or unsolicited data is
// waiting, false when nothing is (or it cannot tell). It runs in Control,
// not Read, because the transport's read loop holds the read lock of an
// idle connection.
func peerClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var buf [1]byte
	cerr := rc.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil:
			closed = n >= 0 // 0: end of file; more: unsolicited bytes
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EWOULDBLOCK), errors.Is(err, syscall.EINTR):
		default:
			closed = true // reset by the peer
		}
	})
	return closed || cerr != nil
}
