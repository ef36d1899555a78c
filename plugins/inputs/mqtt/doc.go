// Package mqtt is the "mqtt" source: it takes MES and machine messages from
// an MQTT broker into the queue, acknowledging each message only after the
// queue's fsync'd commit. It has two modes.
//
// # Client mode
//
// plantgate connects to the plant broker (paho.mqtt.golang, MQTT 3.1.1) with
// a fixed client id and a persistent session (clean session off), and
// subscribes to the configured topic filters on every connect. Automatic
// acknowledgement is off:
//
//	broker --PUBLISH--> paho router goroutine --handler--> window (bounded, max_in_flight)
//	                                                         |
//	   decode: take messages, decode each; grow the batch (up to batch_max) until emit takes it
//	   emit:   Emit the batch (one fsync'd commit)
//	   ack:    PUBACK/PUBREC for each committed message, in order
//
// The three stages run at once on consecutive batches, in order, so one
// batch's commit overlaps the next one's decoding and the previous one's
// acknowledgements.
//
// The handler never does I/O; it puts the message in the window. At most
// max_in_flight messages are anywhere between the handler and their
// acknowledgement (in the window or in a stage's batch): that bounds the
// memory ingest takes. When that many are in flight (the queue is slow or
// full), the handler waits until one is acknowledged. paho
// calls handlers from the goroutine that also reads the socket (order
// matters, the default), so waiting stops paho reading: TCP flow control
// then holds the broker back, which keeps the messages. MQTT 3.1.1 has no
// receive maximum, and paho's MaxResumePubInFlight only limits what paho
// itself resends, so stopping the reads is the only bound on what a v3
// client is sent. Letting paho run handlers in their own goroutines (order
// off) would remove that bound: every message the broker sends would wait
// in memory.
//
// A reading pause also stalls keep-alive answers, and paho declares the
// connection dead after keep_alive plus its ping timeout. So when one
// commit has waited pause_after (the queue quota is reached and Emit
// blocks), the source disconnects on purpose and stays away until the
// commit returns: the broker keeps new messages in the persistent session
// (raise its queue limits, see configs/mosquitto/plantgate.conf), and
// nothing that was not committed was acknowledged. Messages given back this
// way, or left in the window by a lost connection, are redelivered by the
// broker after the reconnect.
//
// A waiting handler checks every 50ms whether its connection is closing,
// since paho reports a lost connection only after the handler returned;
// it then returns without acknowledging, and paho can tear down and
// reconnect (with backoff, up to reconnect_max).
//
// # Embedded broker mode
//
// plantgate runs a mochi-mqtt broker, so MES can publish straight to it.
// Its OnPublish hook decodes and emits each message synchronously; mochi
// writes the PUBACK (PUBREC for QoS 2) only after the hook returned, so a
// publisher is never told a message is safe before it is on disk. If the
// Emit fails, no acknowledgement is sent and the client is disconnected,
// so it sends the message again after reconnecting. Clients authenticate
// with a username and password, and per-user ACLs list the topics each may
// publish and subscribe to.
//
// # Duplicates
//
// Delivery is at least once: a crash between commit and acknowledgement, a
// connection lost with acknowledgements on the wire, or a pause make the
// broker send messages again. Flows remove these duplicates with their id
// expression (the queue drops a record whose id it saw within the dedup
// window). The DUP flag is never used for that: mochi sets it on every
// message resent from its store, even ones never delivered before.
package mqtt
