// Package fodmf is the "fo.dmf" sink: it imports records into Dynamics 365
// F&O as DMF data packages, for bulk records such as consumption journals
// and counting, never for what needs an answer now.
//
// The sink drives its stream itself (pipeline.StreamSink). Records
// collect in the queue; a batch closes at max_records, max_bytes, max_age
// or a cron schedule time (robfig/cron, in the plant's time zone),
// whichever comes first, and only while F&O is reachable. A batch is a
// fixed range of the stream, persisted in the sink's state together with
// the dead letters of records that can never go into a data file. It then
// goes through these steps, each persisted before its work starts, so a
// restart or a power cut resumes the batch at the step it was in:
//
//	closed     the package is built (internal/d365/dmfpackage), synced, and its hash kept
//	packaged   GetAzureWriteUrl (its double-encoded value decoded), upload with azblob;
//	           a refused (expired) SAS URL is replaced by a new one
//	uploaded   under the environment's import lock (F&O's imports must not run in parallel),
//	           an executionId chosen by plantgate is persisted, then ImportFromPackage
//	importing  after a restart F&O is asked about the executionId first; only an id F&O
//	           still does not know after not_found_grace is requested again, under the same id
//	polling    GetExecutionSummaryStatus with backoff (the token source refreshes tokens on
//	           long polls); an import running past import_deadline is reported stalled and
//	           held, never imported again
//	settling   Succeeded: every line acked. PartiallySucceeded: F&O's staging error file
//	           and target error keys file are matched to the package's lines (by the values
//	           of the columns both have; line_field makes the match exact) and exactly those
//	           lines are dead-lettered with F&O's reason, the rest acked. Failed: every line
//	           dead-lettered with GetExecutionErrors' text, or imported again (on_failed)
//
// The upload URL is a credential: it is kept in memory only, never
// persisted, logged or shown; after a restart the package is uploaded
// again to a new one.
package fodmf
