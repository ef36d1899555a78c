// Package sdnotify sends systemd service notifications (READY=1,
// STOPPING=1, RELOADING=1, WATCHDOG=1) over $NOTIFY_SOCKET without cgo.
package sdnotify

import (
	"net"
	"os"
)

// Notification states.
const (
	Ready     = "READY=1"
	Stopping  = "STOPPING=1"
	Reloading = "RELOADING=1"
	Watchdog  = "WATCHDOG=1"
)

// Notify sends state to systemd. It returns false, nil when not running
// under systemd (no $NOTIFY_SOCKET).
func Notify(state string) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return false, nil
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return false, err
	}
	defer func() { _ = conn.Close() }()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, err
	}
	return true, nil
}
