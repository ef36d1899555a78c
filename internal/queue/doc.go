// Package queue is plantgate's durable local queue, a single bbolt file.
//
// Layout (schema version 1):
//
//	meta/                     schema_version, created
//	streams/<flow.sink>/
//	    items/  seq(be64) -> envelope    records waiting for their sink, FIFO
//	    dead/   seq(be64) -> envelope    dead letters, with reason and raw bytes
//	    ids/    id -> expiry(be64)        idempotency keys inside the dedup window
//	    idx/    expiry(be64)+id -> nil    the same keys ordered by expiry, for pruning
//	    stats   count(be64) bytes(be64) dead(be64) dead_bytes(be64)
//	state/<scope>/ name -> value          small named state of components
//
// Every mutation goes through one committer goroutine that gathers the
// requests waiting while the previous fsync ran into one bbolt transaction
// (group commit), so Append, Ack and the rest return only after an fsync'd
// commit and concurrent callers share that commit. DB.Batch is not used: it
// waits 10 ms unless many callers pile up.
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
