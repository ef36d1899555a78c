// Package d365 is plantgate's client for Dynamics 365 Finance & Operations:
// authentication, the HTTP client, the classification of F&O's answers,
// the adaptive limiter, the circuit breaker, the $batch codec and the
// in-doubt bookkeeping. The F&O sinks (fo.odata and fo.mes) build on
// it; it is the only place in plantgate that maps HTTP statuses.
//
// One Env per F&O environment is shared by all sinks that name it (the
// gateway hands it out through pipeline.Env.Resolve with kind "fo"):
//
//	sink.Write -> Env.Do(request)
//	               breaker open?  -> pipeline.Throttle(until the next probe)
//	               Limiter.Acquire(priority)   adaptive rate, max_concurrent, pause after 429
//	               TokenSource.Token           MSAL confidential client, cached, renewed 5 min early
//	               BeforeSend                  the sink marks the record in flight (fsync)
//	               HTTP request over TLS       system roots + ca_file
//	               401 -> new token, once      then transient
//	               Classify(answer)            nil | pipeline.Permanent | pipeline.Throttle | transient
//
// # Authentication
//
// TokenSource uses MSAL Go's confidential client with a client secret, or a
// certificate and private key, for the scope "<environment URL>/.default"
// (the URL in lower case without a trailing slash, as F&O checks the
// token's audience). The authority is authority_url plus the tenant; MSAL's
// instance discovery is off unless the authority is one of Microsoft's, so
// fo-emulator and private clouds work offline. Tokens and secrets are never
// logged or put in errors.
//
// # Classification
//
// Classify maps an answer to what the flow engine does with the records:
// 400/404/409/422 and other 4xx are permanent (dead letter with F&O's
// innererror.message, else error.message, else the body, one line of at
// most 1000 bytes); 403 too, and the sink reports itself unhealthy; 401 is
// transient after one token refresh; 408, 5xx and network errors are
// transient (the runner backs off exponentially with jitter); 429, and 503
// with Retry-After, become pipeline.Throttle for Retry-After. A 500 whose
// innererror is F&O's write exception (how F&O answers a validation
// failure inside $batch) is permanent. An HTML page from a proxy yields its
// title and text; a token endpoint answering garbage yields a precise
// reason, never a panic.
//
// # Limiter and breaker
//
// The Limiter paces an environment's requests: a token bucket whose rate
// increases additively while it is the bottleneck and decreases
// multiplicatively on a 429 (never above max_requests_per_second), a pause
// of every sink until Retry-After, max_concurrent requests in flight, and
// strict priority lanes (high, normal, low) so urgent flows get the
// capacity first. The bucket itself is golang.org/x/time/rate's, driven
// through its *At methods by the limiter's clock; the lanes, the pause and
// the cap sit around it, because rate.Limiter's Wait admits waiters in no
// order and knows neither. The Breaker opens after consecutive
// connectivity failures (no answer, 5xx, an unreachable identity
// platform), fails calls fast while open, and lets one probe call through
// after a delay that doubles on each failed probe.
//
// The Breaker is written here rather than taken from sony/gobreaker (v2),
// which was weighed for it: gobreaker reads time.Now itself (no clock to
// inject, so the state machine cannot be tested without sleeping), keeps
// one fixed open Timeout (no delay doubling up to a maximum after each
// failed probe, which keeps a plant from probing a long F&O outage every
// few seconds), keeps the moment of the next probe private (the gateway
// turns it into pipeline.Throttle so runners wait exactly that long, and
// status shows it as next_probe), and answers a call refused during the
// half-open probe with ErrTooManyRequests at once, with nothing to wait on
// (ProbeDone lets the refused calls wait for the probe's outcome and then
// reach the limiter together, by priority). Wrapping it to add these would
// keep a second copy of its state beside it.
//
// # In doubt
//
// A request that left without an answer (or that a gateway answered 502
// or 504) has an unknown outcome; one that provably never left (refused
// connection, failed TLS handshake, a reused connection the server had
// already closed) is simply retried. Tracker keeps, beside each record in
// the queue (pipeline.RecordStore), a mark written before the request
// leaves ("sending") and, for sends that cannot be verified, after F&O
// accepted it ("delivered"), plus holds: records held for an operator and
// those parked behind them. The queue deletes a mark in the transaction
// that acks or dead-letters its record. After a crash a mark tells the
// sink that a record may already be in F&O: OData entities with a key are
// read back before any resend; MES messages are held (in_doubt: hold) or
// sent again (in_doubt: resend). plantgate queue in-doubt, release and
// drop work on the holds.

package d365
