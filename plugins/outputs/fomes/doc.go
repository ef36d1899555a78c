// Package fomes is the "fo.mes" sink: it sends each record as one message
// to the MES integration of Dynamics 365 Supply Chain Management, the
// message service operation
//
//	POST /api/services/SysMessageServices/SysMessageService/SendMessage
//	{"_companyId":"USMF","_messageQueue":"JmgMES3P","_messageType":"ProdProductionOrderStart",
//	 "_messageContent":"{\"ProductionOrderNumber\":\"P000123\"}"}
//
// with the record's fields as the content, serialized into a string. The
// record is checked first against the documented fields of its message
// type (mandatory fields, at least one line, numbers, dates, enums,
// Yes/No); a record that does not fit is dead-lettered with every problem
// and never sent.
//
// Messages are written one at a time with pipeline.ForEach, so a message
// that fails transiently stops the later messages of its key in the batch.
// The flow's key must be the production order: F&O processes an order's
// messages in the order received.
//
// SendMessage has no idempotency key. The sink marks each message in
// flight in its durable state before the request leaves and delivered once
// F&O accepted it (d365.Tracker), so after a crash or a timeout it knows
// which messages are in doubt. With in_doubt: hold (the default) such a
// message is never sent twice: it is dead-lettered with a reason that
// starts "in doubt: held for an operator", and the later messages of its
// production order are parked behind it, while other orders continue.
// plantgate queue in-doubt lists them; release sends the held message
// again followed by the parked ones, drop turns it into a dead letter
// "dropped by operator while in doubt" and delivers the parked ones. A
// held record is a dead letter rather than a retried record because a
// record retried by the flow engine blocks its whole lane, other
// production orders included. With in_doubt: resend the message is sent
// again.
package fomes
