package ctxio

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

func TestReaderStopsWhenCtxEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	if _, err := io.Copy(&out, Reader(ctx, bytes.NewReader([]byte("abc")))); err != nil || out.String() != "abc" {
		t.Fatalf("copy = %q, %v", out.String(), err)
	}
	cancel()
	if _, err := io.Copy(&out, Reader(ctx, bytes.NewReader([]byte("def")))); !errors.Is(err, context.Canceled) {
		t.Fatalf("copy after cancel: %v, want context.Canceled", err)
	}
}
