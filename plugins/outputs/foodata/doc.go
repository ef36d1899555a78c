// Package foodata is the "fo.odata" sink: it creates or updates one
// Dynamics 365 F&O data entity record per queue record through OData.
//
//	mode create   POST  /data/<Set>
//	mode update   PATCH /data/<Set>(dataAreaId='usmf',Key='...')
//	mode upsert   POST, and PATCH by the key when F&O answers that the
//	              record already exists
//
// Records are written one at a time with pipeline.ForEach (a transient
// failure stops the later records of its key), or with batch.enabled as
// $batch changesets of at most batch.changeset_size operations. A failed
// changeset's failing operation is classified on its own and only its
// record is dead-lettered (a *pipeline.PartialError); the rolled-back
// operations go out again in the next request. Records of one key always
// share a changeset within a request, so a rollback never reorders a key.
//
// Before a record's request leaves, the sink marks it in flight in its
// durable state (d365.Tracker). A record whose outcome is in doubt (the
// gateway was killed, a timeout) is read back by its key before any
// resend: found (holding the values sent, for update and upsert) means
// delivered, absent means send it. Records of an entity without a
// configured key cannot be verified and follow in_doubt (hold or resend).
//
// The F&O environment (authentication, limiter, circuit breaker,
// classification of answers) comes from package d365 through
// pipeline.Env.Resolve.
package foodata
