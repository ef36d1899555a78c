package logging

// Field names used in log events. Use these constants rather than string
// literals so that the journal can be queried reliably across releases.
const (
	FieldComponent   = "component"
	FieldPlugin      = "plugin"
	FieldInstance    = "instance"
	FieldFlow        = "flow"
	FieldSink        = "sink"
	FieldSource      = "source"
	FieldStream      = "stream"
	FieldBatchID     = "batch_id"
	FieldRecords     = "records"
	FieldAttempt     = "attempt"
	FieldRetryIn     = "retry_in"
	FieldExecutionID = "execution_id"
	FieldNodeID      = "node_id"
	FieldTopic       = "topic"
	FieldSeq         = "seq"
	FieldKey         = "key"
	FieldReason      = "reason"
	FieldPath        = "path"
	FieldAddr        = "addr"
	FieldURL         = "url"
	FieldStatus      = "status"
	FieldMethod      = "method"
	FieldDuration    = "duration"
	FieldVersion     = "version"
	FieldCount       = "count"
	FieldBytes       = "bytes"
	FieldEntity      = "entity"
	FieldCompany     = "company"
	FieldClientID    = "client_id"
	FieldMessageID   = "message_id"
	FieldMessageType = "message_type"
	FieldRoute       = "route"
	FieldLevel       = "level"
)

// Field names added for the fo-emulator.
const (
	FieldTenant    = "tenant"
	FieldBlobMode  = "blob_mode"
	FieldState     = "state"
	FieldThrottle  = "throttle"
	FieldThrottled = "throttled"
	FieldOrder     = "production_order"
	FieldBlob      = "blob"
	FieldSet       = "entity_set"
)

// Field names added for the mqtt source.
const (
	FieldUsername = "username"
)
