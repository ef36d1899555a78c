package mqtt

import (
	"context"
	"errors"
	"fmt"
	"net"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// checkSuffix is appended to the client id of the connection
// plantgate check-config --online opens, so it never takes over the
// gateway's persistent session.
const checkSuffix = "-check"

// CheckOnline implements pipeline.OnlineChecker. In client mode it
// connects to the broker with the source's address, TLS and credentials
// and disconnects at once: a clean session under the client id with
// "-check" appended, so the gateway's persistent session (its
// subscriptions and the messages kept for it) is untouched, and nothing
// is subscribed or published. For the embedded broker it checks that the
// listen address is free.
func (c *Config) CheckOnline(ctx context.Context) (string, error) {
	cc := *c
	setDefaults(&cc)
	if e := cc.Embedded; e != nil {
		var lc net.ListenConfig
		l, err := lc.Listen(ctx, "tcp", e.Listen)
		if err != nil {
			return "", fmt.Errorf("the embedded broker cannot listen on %s (is a gateway running?): %w", e.Listen, err)
		}
		_ = l.Close()
		return fmt.Sprintf("the embedded broker can listen on %s", e.Listen), nil
	}
	tc, err := clientTLS(&cc)
	if err != nil {
		return "", err
	}
	id := cc.ClientID + checkSuffix
	o := paho.NewClientOptions().AddBroker(cc.Broker).SetClientID(id).SetProtocolVersion(4).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(cc.ConnectTimeout).SetWriteTimeout(cc.ConnectTimeout).SetKeepAlive(cc.KeepAlive).
		SetCustomOpenConnectionFn(openConnection)
	if cc.Username != "" {
		o.SetUsername(cc.Username)
	}
	if !cc.Password.IsZero() {
		o.SetPassword(cc.Password.Reveal())
	}
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	cl := paho.NewClient(o)
	tok := cl.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		cl.Disconnect(0)
		return "", fmt.Errorf("connect to %s: %w", cc.Broker, ctx.Err())
	}
	if err := tok.Error(); err != nil {
		cl.Disconnect(0)
		return "", fmt.Errorf("connect to %s as %s: %w", cc.Broker, id, err)
	}
	if !cl.IsConnected() {
		return "", errors.New("connect to " + cc.Broker + ": not connected")
	}
	cl.Disconnect(disconnectQuiesce)
	who := "without a username"
	if cc.Username != "" {
		who = "as user " + cc.Username
	}
	return fmt.Sprintf("connected to %s %s (client id %s, clean session) and disconnected", cc.Broker, who, id), nil
}

var _ pipeline.OnlineChecker = (*Config)(nil)
