package node

import (
	"context"
	"strings"
	"testing"
)

// The embedded NATS server is one node: asking it for three copies of each
// stream is a configuration mistake, refused at start by name (the server
// itself would quietly keep one).
func TestEmbeddedNATSRefusesReplicas(t *testing.T) {
	cfg := loadConfig(t, testEnv(t.TempDir(), "SATORU_NATS_REPLICAS=3"))
	n, err := Start(context.Background(), cfg, All, testLogger(t))
	if err == nil {
		n.Stop()
		_ = n.Wait()
		t.Fatal("Start with nats_replicas 3 and the embedded server: no error")
	}
	if !strings.Contains(err.Error(), "nats_replicas") {
		t.Fatalf("error %q does not name nats_replicas", err)
	}
}
