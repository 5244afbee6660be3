// Command satoru runs Satoru: `satoru up` starts every service with an
// embedded NATS server and store; `satoru puller` and `satoru api` run one
// service against external NATS and MongoDB.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/satoru/satoru/cmd/satoru/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
