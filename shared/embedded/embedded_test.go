package embedded

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dirMode(t *testing.T, dir string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestNATSPersistsStreamAcrossRestart(t *testing.T) {
	ctx := testCtx(t)
	dir := filepath.Join(t.TempDir(), "nats")

	start := func() *NATS {
		t.Helper()
		n, err := StartNATS(NATSOptions{Dir: dir, Port: -1})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	n := start()
	if got := dirMode(t, dir); got != 0o700 {
		t.Errorf("dir mode = %o, want 700", got)
	}
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.one", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	n.Shutdown()

	n = start()
	defer n.Shutdown()
	// Second connection goes in-process, not over TCP.
	nc, err = nats.Connect("", n.InProcessOption())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err = jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg.Data) != "hello" {
		t.Errorf("data = %q, want hello", msg.Data)
	}
	if n.Server() == nil {
		t.Error("Server() = nil")
	}
}

func TestNATSRequiresDir(t *testing.T) {
	if _, err := StartNATS(NATSOptions{Port: -1}); err == nil {
		t.Fatal("want error without Dir")
	}
}

func TestStorePersistsAcrossRestart(t *testing.T) {
	ctx := testCtx(t)
	dir := filepath.Join(t.TempDir(), "store")

	withStore := func(f func(coll *mongo.Collection)) {
		t.Helper()
		st, err := StartStore(ctx, StoreOptions{Dir: dir, Listen: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if st.URI() == "mongodb://127.0.0.1:0/" {
			t.Fatalf("URI %q does not carry the real port", st.URI())
		}
		c, err := mongo.Connect(options.Client().ApplyURI(st.URI()).SetMaxPoolSize(1))
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := c.Disconnect(ctx); err != nil {
				t.Error(err)
			}
		}()
		f(c.Database("embedded_test").Collection("things"))
	}

	withStore(func(coll *mongo.Collection) {
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "n", Value: 42}}); err != nil {
			t.Fatal(err)
		}
	})
	if got := dirMode(t, dir); got != 0o700 {
		t.Errorf("dir mode = %o, want 700", got)
	}
	withStore(func(coll *mongo.Collection) {
		// The restart indexed the collection made by the first run.
		if got := idIndexes(t, dir, "embedded_test"); len(got) != 1 {
			t.Errorf("id indexes after restart = %v", got)
		}
		var got struct {
			ID string `bson:"_id"`
			N  int    `bson:"n"`
		}
		if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "a"}}).Decode(&got); err != nil {
			t.Fatal(err)
		}
		if got.N != 42 {
			t.Errorf("n = %d, want 42", got.N)
		}
	})
}

func TestStoreRefusesBusyAddress(t *testing.T) {
	ctx := testCtx(t)
	st, err := StartStore(ctx, StoreOptions{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := StartStore(ctx, StoreOptions{Dir: t.TempDir(), Listen: st.Addr()}); err == nil {
		t.Fatal("want error for an address in use")
	}
	st.Close()
	st.Close() // idempotent
}

// idIndexes lists the SQLite indexes IndexIDs made in a database file.
func idIndexes(t *testing.T, dir, db string) []string {
	t.Helper()
	sdb, err := sql.Open("sqlite", "file:"+filepath.Join(dir, db+".sqlite")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	rows, err := sdb.Query(`SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE '%' || ? ORDER BY name`, idIndexSuffix)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.TrimSuffix(n, idIndexSuffix))
	}
	return out
}

func TestStoreIndexesIDLookups(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	st, err := StartStore(ctx, StoreOptions{Dir: dir, Listen: "127.0.0.1:0", IndexEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := mongo.Connect(options.Client().ApplyURI(st.URI()).SetMaxPoolSize(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(ctx)
	db := c.Database("idx")
	for _, name := range []string{"a", "b"} {
		if _, err := db.Collection(name).InsertOne(ctx, bson.D{{Key: "_id", Value: "x"}, {Key: "v", Value: name}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := idIndexes(t, dir, "idx"); len(got) != 0 {
		t.Fatalf("indexed before IndexIDs: %v", got)
	}
	n, err := st.IndexIDs(ctx)
	if err != nil || n != 2 {
		t.Fatalf("IndexIDs = %d, %v; want 2", n, err)
	}
	if got := idIndexes(t, dir, "idx"); len(got) != 2 || !strings.HasPrefix(got[0], "a_") || !strings.HasPrefix(got[1], "b_") {
		t.Fatalf("indexes = %v", got)
	}
	if n, err := st.IndexIDs(ctx); err != nil || n != 0 {
		t.Fatalf("second IndexIDs = %d, %v; want 0", n, err)
	}

	// FerretDB keeps working the same: lookups, updates, the unique _id,
	// deletes, its own index list, dropping the collection.
	coll := db.Collection("a")
	if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "x"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: "new"}}}}); err != nil {
		t.Fatal(err)
	}
	var got struct{ V string }
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "x"}}).Decode(&got); err != nil || got.V != "new" {
		t.Fatalf("after update: %+v, %v", got, err)
	}
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "x"}}); !mongo.IsDuplicateKeyError(err) {
		t.Fatalf("duplicate _id: %v", err)
	}
	specs, err := coll.Indexes().ListSpecifications(ctx)
	if err != nil || len(specs) != 1 || specs[0].Name != "_id_" {
		t.Fatalf("listIndexes = %v, %v", specs, err)
	}
	if r, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: "x"}}); err != nil || r.DeletedCount != 1 {
		t.Fatalf("delete: %+v, %v", r, err)
	}
	if err := db.Collection("b").Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if got := idIndexes(t, dir, "idx"); len(got) != 1 {
		t.Fatalf("after drop: %v", got)
	}
	if err := db.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := st.IndexIDs(ctx); err != nil || n != 0 {
		t.Fatalf("IndexIDs after dropping the database = %d, %v", n, err)
	}
}

func TestStoreIndexLoopIndexesNewCollections(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	st, err := StartStore(ctx, StoreOptions{Dir: dir, Listen: "127.0.0.1:0", IndexEvery: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := mongo.Connect(options.Client().ApplyURI(st.URI()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(ctx)
	if _, err := c.Database("loop").Collection("jobs").InsertOne(ctx, bson.D{{Key: "_id", Value: "j"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(idIndexes(t, dir, "loop")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("new collection not indexed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
