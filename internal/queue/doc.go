// Package queue is plantgate's durable local queue, a single bbolt file.
//
// Layout (schema version 2; version 1 lacked marks, held, heldkeys, the
// sequence floors and the hash and first version beside an id):
//
//	meta/                     schema_version, created, seq/<stream> and dseq/<stream>:
//	                          the last sequences of a purged stream, so none is reused
//	streams/<flow.sink | sink>/
//	    items/    seq(be64) -> envelope   records waiting for their sink, FIFO
//	    dead/     seq(be64) -> envelope   dead letters, with reason and raw bytes
//	    ids/      id -> expiry, content hash, seq, first version (bounded)
//	    idx/      expiry(be64)+id -> nil  the same keys ordered by expiry, for pruning
//	    marks/    seq -> value            a sink's mark of a queued record (in-flight marker),
//	                                      deleted with the record's ack, dead letter or purge
//	    held/     seq -> Hold (JSON)      records a sink set aside for an operator
//	    heldkeys/ key -> seq              the in-doubt record holding back each key
//	    stats     count(be64) bytes(be64) dead(be64) dead_bytes(be64)
//	state/<scope>/ name -> value          small named state of components
//
// A lock file beside the queue file (queue.db.lock) is held for the
// store's life, also while a compaction at Open replaces the file.
//
// Every mutation goes through one committer goroutine that gathers the
// requests waiting while the previous fsync ran into one bbolt transaction
// (group commit), so Append, Ack and the rest return only after an fsync'd
// commit and concurrent callers share that commit. A request that fails
// takes none of its writes into the file and fails none of its
// neighbours: the transaction is rolled back and run again without it.
// DB.Batch is not used: it waits 10 ms unless many callers pile up.
//
// Quotas: MaxBytes bounds what is in use in the file (measured after every
// commit: the high-water mark less bbolt's free pages), DeadMaxBytes the
// dead letters; at either, appends wait (or fail) so sources stop
// acknowledging.
//
// Leases live in memory: a leased record stays in items until it is acked
// (deleted), dead-lettered (moved to dead) or nacked/expired (offered again).
// After a crash or restart every unacked record is offered again, in order:
// delivery is at least once, and sinks are idempotent.
//
// State written with WithState shares the transaction of the records it
// concerns, so a component's progress and its records can never disagree
// after a crash.
package queue
