package mqtt

import (
	"context"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestCheckOnlineLeavesTheSessionAlone: check-config --online connects to
// mosquitto and disconnects, under its own client id with a clean
// session, so the gateway's persistent session keeps the message queued
// for it while it was away; a broker that is down fails the check.
func TestCheckOnlineLeavesTheSessionAlone(t *testing.T) {
	m := startMosquitto(t)
	connect := func(id string, clean bool, got chan<- string) paho.Client {
		o := paho.NewClientOptions().AddBroker(m.url()).SetClientID(id).SetCleanSession(clean).SetAutoReconnect(false)
		if got != nil {
			o.SetDefaultPublishHandler(func(_ paho.Client, msg paho.Message) { got <- string(msg.Payload()) })
		}
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("connect %s: %v", id, tok.Error())
		}
		return c
	}
	// The gateway's persistent session, subscribed, then away.
	gw := connect("pg-1", false, nil)
	if tok := gw.Subscribe("mes/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	gw.Disconnect(100)
	pub := connect("mes-publisher", true, nil)
	if tok := pub.Publish("mes/line3/finished", 1, false, "kept"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub.Disconnect(100)

	cfg := &Config{Broker: m.url(), ClientID: "pg-1", Topics: []Topic{{Filter: "mes/#"}}}
	detail, err := cfg.CheckOnline(context.Background())
	if err != nil || !strings.Contains(detail, "client id pg-1-check, clean session") {
		t.Fatalf("CheckOnline: %q, %v", detail, err)
	}

	got := make(chan string, 1)
	gw = connect("pg-1", false, got)
	defer gw.Disconnect(100)
	select {
	case p := <-got:
		if p != "kept" {
			t.Errorf("the gateway's session delivered %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the message queued for the gateway's session is gone after the online check")
	}

	m.stop(9)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cfg.CheckOnline(ctx); err == nil || !strings.Contains(err.Error(), "connect to "+m.url()) {
		t.Errorf("CheckOnline with the broker down: %v", err)
	}
}

// TestPreviewMessage: flow test decodes a payload as the source would,
// with the QoS of the topic that matches, and refuses a topic the source
// does not receive.
func TestPreviewMessage(t *testing.T) {
	q0 := 0
	cfg := &Config{Broker: "tcp://b:1883", ClientID: "pg", Format: "csv", CSVHeader: []string{"order", "good"},
		Topics: []Topic{{Filter: "mes/+/finished"}, {Filter: "mes/+/counts", QoS: &q0}}, QoS: 1}
	at := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	m, err := cfg.PreviewMessage("mes/line3/counts", []byte("P1,5"), at)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := m.Payload.(map[string]any)
	if m.DecodeErr != nil || p["order"] != "P1" || m.Meta[MetaQoS] != 0 || m.Meta[MetaTopic] != "mes/line3/counts" || !m.Time.Equal(at) {
		t.Errorf("message %+v", m)
	}
	if _, err := cfg.PreviewMessage("plant/line3/counts", []byte("P1,5"), at); err == nil || !strings.Contains(err.Error(), "its topics are mes/+/finished, mes/+/counts") {
		t.Errorf("a topic outside the source's topics: %v", err)
	}
	if _, err := cfg.PreviewMessage("", []byte("P1,5"), at); err == nil || !strings.Contains(err.Error(), "--topic") {
		t.Errorf("no topic: %v", err)
	}
	emb := &Config{Embedded: &Embedded{AllowAnonymous: true}}
	if _, err := emb.PreviewMessage("$SYS/broker/uptime", []byte("{}"), at); err == nil {
		t.Error("the embedded broker's own $ topics are not ingested")
	}
}
