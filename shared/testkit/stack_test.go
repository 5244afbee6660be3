package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/domain"
)

func TestStartStack(t *testing.T) {
	s := StartStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	st := s.OpenStore(t)
	site := domain.Site{UUID: "s1", Name: "one", Host: "127.0.0.1", Port: 22, User: "u"}
	if err := st.CreateSite(ctx, site); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetSite(ctx, "s1")
	if err != nil || got.Name != "one" {
		t.Fatalf("GetSite = %+v, %v", got, err)
	}

	nc, err := nats.Connect(s.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	if s.Dir == "" || s.StoreURI == "" || s.NATS == nil || s.Store == nil {
		t.Fatalf("incomplete stack: %+v", s)
	}
}
