// Package sdnotify tells systemd about the gateway's lifecycle (READY=1,
// RELOADING=1, STOPPING=1, WATCHDOG=1) through coreos/go-systemd's daemon
// package. It adds only the RELOADING=1 timestamp that Type=notify-reload
// units expect, which that package does not build.
package sdnotify

import (
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Notification states.
const (
	Ready     = daemon.SdNotifyReady
	Stopping  = daemon.SdNotifyStopping
	Reloading = daemon.SdNotifyReloading
	Watchdog  = daemon.SdNotifyWatchdog
)

// Notify sends state to systemd. It returns false, nil when not running
// under systemd (no $NOTIFY_SOCKET).
func Notify(state string) (bool, error) { return daemon.SdNotify(false, state) }

// ReloadingNow is the RELOADING=1 notification with the MONOTONIC_USEC
// timestamp systemd expects beside it.
func ReloadingNow() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return Reloading
	}
	return Reloading + "\nMONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)
}

// WatchdogInterval returns systemd's watchdog interval for this process
// (WatchdogSec= in the unit), or 0 when there is none. The process must
// send Watchdog more often than that.
func WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}
