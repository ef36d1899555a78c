//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package d365

import "net"

// peerClosed cannot peek at a connection on this platform: it never
// claims the peer closed it.
func peerClosed(net.Conn) bool { return false }
