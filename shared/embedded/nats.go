package embedded

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// NATSOptions configures an in-process NATS server.
type NATSOptions struct {
	// Dir is where JetStream keeps its data (created 0700). Required.
	Dir string
	// NoListener serves in-process clients only (InProcessOption): no
	// port is opened, so no other process can connect. Host and Port are
	// then ignored.
	NoListener bool
	// Host to listen on; default 127.0.0.1.
	Host string
	// Port for clients: 0 means the default 4222, -1 a random free port.
	Port int
	// Username and Password, when set, are required of every client, the
	// in-process ones too (InProcessOption sends them). A listener
	// without them is open to every local user: tests only.
	Username, Password string
	// Logger receives the server's log lines (notices at Info, warnings at
	// Warn, errors and fatals at Error). Nil keeps the server silent.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for the server to accept clients;
	// default 10s.
	ReadyTimeout time.Duration
}

// NATS is a running in-process NATS server with JetStream.
type NATS struct {
	ns         *server.Server
	user, pass string
}

// StartNATS starts a NATS server with JetStream persisting under o.Dir and
// returns once it accepts connections.
func StartNATS(o NATSOptions) (*NATS, error) {
	if o.Dir == "" {
		return nil, errors.New("embedded: nats: Dir is required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("embedded: nats: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded: nats: %w", err)
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 10 * time.Second
	}
	if (o.Username == "") != (o.Password == "") {
		return nil, errors.New("embedded: nats: give both Username and Password, or neither")
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "satoru-embedded",
		Host:       o.Host,
		Port:       o.Port,
		DontListen: o.NoListener,
		Username:   o.Username,
		Password:   o.Password,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      o.Logger == nil,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded: nats: %w", err)
	}
	if o.Logger != nil {
		ns.SetLoggerV2(slogNATS{o.Logger.With("component", "nats-server")}, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(o.ReadyTimeout) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("embedded: nats: not ready for connections after %s", o.ReadyTimeout)
	}
	return &NATS{ns: ns, user: o.Username, pass: o.Password}, nil
}

// ClientURL is the URL clients connect to, e.g. nats://127.0.0.1:4222,
// without credentials; "" when the server has no listener.
func (n *NATS) ClientURL() string {
	if n.ns.Addr() == nil {
		return ""
	}
	return n.ns.ClientURL()
}

// Addr is the host:port clients connect to, "" without a listener.
func (n *NATS) Addr() string {
	if a := n.ns.Addr(); a != nil {
		return a.String()
	}
	return ""
}

// Server is the underlying server.
func (n *NATS) Server() *server.Server { return n.ns }

// InProcessOption makes a nats.Connect use an in-process connection to
// this server instead of TCP, with the server's credentials if it has any.
func (n *NATS) InProcessOption() nats.Option {
	return func(o *nats.Options) error {
		if err := nats.InProcessServer(n.ns)(o); err != nil {
			return err
		}
		if n.user != "" {
			return nats.UserInfo(n.user, n.pass)(o)
		}
		return nil
	}
}

// Shutdown stops the server and waits until it has stopped.
func (n *NATS) Shutdown() {
	n.ns.Shutdown()
	n.ns.WaitForShutdown()
}

// slogNATS adapts a *slog.Logger to the NATS server's Logger interface.
type slogNATS struct{ l *slog.Logger }

func (s slogNATS) Noticef(format string, v ...any) { s.l.Info(fmt.Sprintf(format, v...)) }
func (s slogNATS) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s slogNATS) Fatalf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s slogNATS) Errorf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s slogNATS) Debugf(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s slogNATS) Tracef(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
