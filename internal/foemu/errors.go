package foemu

import "errors"

// ErrConfig reports an invalid configuration, schema or seed file. The
// message starts with file:line where the file has one.
var ErrConfig = errors.New("invalid configuration")

// ErrNotStarted reports a call that needs a running emulator (one that
// Start or Serve has started).
var ErrNotStarted = errors.New("emulator not started")

// ErrAlreadyStarted reports a second call to Start or Serve.
var ErrAlreadyStarted = errors.New("emulator already started")

// ErrUnknownEntitySet reports an entity set name the schema does not define.
// Names are case sensitive, as in F&O.
var ErrUnknownEntitySet = errors.New("unknown entity set")

// ErrUnknownClient reports a client ID that is not configured.
var ErrUnknownClient = errors.New("unknown client")

// ErrBlob reports a failure of the blob store that holds DMF packages.
var ErrBlob = errors.New("blob store error")
