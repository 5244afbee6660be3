package store

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestIndexEntryEncoding(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 123000000, time.UTC)
	for _, tc := range []struct {
		name string
		e    indexEntry
	}{
		{"site job in all", indexEntry{JobID: "5a70b0e4-b000-4000-8000-000000000001", SiteUUID: "5a70b0e4-a000-4000-8000-000000000002",
			Type: "backup", Status: "warning", CreatedAt: at, FinishedAt: at.Add(time.Minute), Pos: []int64{0, 17, 123456}}},
		{"repository job", indexEntry{JobID: "j|1,2", Type: "restic_sync", Status: "failed", CreatedAt: at, FinishedAt: at, Pos: []int64{4, 5}}},
		{"no positions", indexEntry{JobID: "x", SiteUUID: "s", Type: "restore", Status: "canceled", CreatedAt: time.UnixMilli(0).UTC(), FinishedAt: at}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeEntry(tc.e.encode())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.e) {
				t.Fatalf("round trip:\n got  %#v\n want %#v", got, tc.e)
			}
		})
	}
	for _, bad := range []string{"", "1\x1fa", "x\x1fj\x1fs\x1fbackup\x1fsuccess\x1f1\x1f", "1\x1fj\x1fs\x1fbackup\x1fsuccess\x1f1\x1f2,z"} {
		if _, err := decodeEntry(bad); err == nil || !strings.Contains(err.Error(), "index entry") {
			t.Errorf("decodeEntry(%q) = %v, want an error naming the entry", bad, err)
		}
	}
}
