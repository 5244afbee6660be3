package restic

import (
	"slices"
	"testing"
)

func TestBrowseArgs(t *testing.T) {
	id := "0123456789abcdef"
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"ls", LsArgs(id, "/s/x"), []string{"ls", "--json", "--", id, "/s/x"}},
		{"dump file", DumpArgs(id, "/s/x/f.txt", ""), []string{"dump", "--", id, "/s/x/f.txt"}},
		{"dump folder rooted at itself", DumpArgs(id, "/s/x", "tar"), []string{"dump", "--archive", "tar", "--", id + ":/s/x", "/"}},
		{"dump root", DumpArgs(id, "/", "tar"), []string{"dump", "--archive", "tar", "--", id, "/"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !slices.Equal(tc.got, tc.want) {
				t.Errorf("got %q\nwant %q", tc.got, tc.want)
			}
		})
	}
}

func TestIncludePattern(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/s/plain dir/f.txt", "/s/plain dir/f.txt"},
		{"/s/a*b?/[x]", `/s/a\*b\?/\[x\]`},
		{`/s/back\slash`, `/s/back\\slash`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := IncludePattern(tc.in); got != tc.want {
				t.Errorf("IncludePattern(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestCheckSnapshotID(t *testing.T) {
	for _, id := range []string{"", "abc", "latest", "0123456G", "-1234567", "ABCDEF01"} {
		if checkSnapshotID(id) == nil {
			t.Errorf("checkSnapshotID(%q) = nil, want an error", id)
		}
	}
	for _, id := range []string{"01234567", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"} {
		if err := checkSnapshotID(id); err != nil {
			t.Errorf("checkSnapshotID(%q) = %v", id, err)
		}
	}
}
