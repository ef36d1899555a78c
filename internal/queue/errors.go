package queue

import "errors"

var (
	// ErrLocked is returned by Open when another process holds the queue file.
	ErrLocked = errors.New("queue file is locked by another process")
	// ErrClosed is returned by operations on a closed Store.
	ErrClosed = errors.New("queue is closed")
	// ErrFull is returned by Append when a quota is reached and on_full is reject.
	ErrFull = errors.New("queue quota reached")
	// ErrTooLarge is returned by Append for a record over MaxRecordBytes.
	ErrTooLarge = errors.New("record exceeds the maximum record size")
	// ErrUnknownStream is returned for a stream that does not exist.
	ErrUnknownStream = errors.New("unknown stream")
	// ErrSchema is returned by Open for a file written by a newer plantgate.
	ErrSchema = errors.New("unsupported queue schema version")
	// ErrCorrupt is returned by Check and by decoding for damaged data.
	ErrCorrupt = errors.New("queue data is corrupt")
	// ErrHeld is returned by Replay for a dead letter a sink holds in doubt.
	ErrHeld = errors.New("record is held in doubt")
	// ErrUnknownHold is returned by Release for a seq that holds nothing.
	ErrUnknownHold = errors.New("no such held record")
	// ErrNoRecord is returned by SetMark and PutHold for a record that is
	// not queued (acked, dead-lettered or purged meanwhile).
	ErrNoRecord = errors.New("record is not queued")
	// ErrBadName is returned for an empty or malformed stream or scope name.
	ErrBadName = errors.New("invalid stream or state name")
)
