// Package flow is plantgate's engine: it compiles the flows of a config,
// routes what sources emit into queue streams, and runs one sink runner per
// stream.
//
//	source --Emit--> Router: for each flow of the source
//	                   when?  -> key, id, map -> Entry{stream "flow.sink"}
//	                 one Append (fsync) for all streams, then Emit returns
//	                 decode or map failure -> dead letter in "_source.<name>"
//
//	stream "flow.sink" --Lease--> Runner dispatcher --hash(key)--> lane 1..P
//	                                lane: Write(batch) -> ack | dead-letter | retry
//
// Order per key: all records of a key go to the same lane, a lane writes
// one batch at a time and retries a failed batch before anything behind it,
// so records of one key are delivered in queue order, across retries and
// restarts (a restart offers unacked records again from the oldest).
// Different keys proceed in parallel on different lanes, and every stream
// has its own runner, so a slow sink never delays another.
//
// Sinks take their records in two ways. A per-record sink (OData, MES)
// is fed by a runner: it takes max_batch records and writes them one by
// one with pipeline.ForEach, which stops a key after its first retryable
// failure. A bulk sink (DMF) implements pipeline.StreamSink and drives its
// stream itself: it closes batches by size, age or schedule as fixed
// ranges of the stream and keeps their multi-step progress in its durable
// state, so a restart resumes the same batch instead of importing it
// twice.
package flow
