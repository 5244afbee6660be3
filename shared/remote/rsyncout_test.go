package remote

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseRsyncProgress(t *testing.T) {
	tests := []struct {
		name string
		rec  string
		want RsyncProgress
		ok   bool
	}{
		{"first tick", "         32,768   1%    0.00kB/s    0:00:00  ", RsyncProgress{32768, 1, "0.00kB/s"}, true},
		{"with xfr", "      3,000,000  99%    1.02MB/s    0:00:02 (xfr#1, to-chk=3/5)", RsyncProgress{3000000, 99, "1.02MB/s"}, true},
		{"no separators", "1179648 39% 1000.89kB/s 0:00:01", RsyncProgress{1179648, 39, "1000.89kB/s"}, true},
		{"done", "     20,971,520 100%   95.12MB/s    0:00:00 (xfr#1, to-chk=0/8)", RsyncProgress{20971520, 100, "95.12MB/s"}, true},
		{"stats line", "Number of files: 5 (reg: 2, dir: 2, link: 1)", RsyncProgress{}, false},
		{"summary", "sent 19 bytes  received 12 bytes  62.00 bytes/sec", RsyncProgress{}, false},
		{"blank", "   ", RsyncProgress{}, false},
		{"bad percent", "100 140% 1.0kB/s 0:00:00", RsyncProgress{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseRsyncProgress(tc.rec)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("ParseRsyncProgress(%q) = %+v, %v; want %+v, %v", tc.rec, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestParseRsyncProgressCaptured reads a real --info=progress2 --stats
// stdout (rsync 3.5.0): every '\r'/'\n' record is either progress or part
// of the stats block, and the stats still parse from what is left.
func TestParseRsyncProgressCaptured(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "rsync", "progress2.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var rest strings.Builder
	var last RsyncProgress
	n := 0
	for _, rec := range strings.FieldsFunc(string(b), func(r rune) bool { return r == '\r' || r == '\n' }) {
		if p, ok := ParseRsyncProgress(rec); ok {
			if p.Bytes < last.Bytes {
				t.Errorf("progress went backwards: %+v after %+v", p, last)
			}
			last = p
			n++
			continue
		}
		rest.WriteString(rec + "\n")
	}
	if n < 2 || last.Bytes != 5000012 {
		t.Fatalf("%d progress records, last %+v", n, last)
	}
	st, err := ParseRsyncStats([]byte(rest.String()))
	if err != nil || st.TotalSize != 5000017 || st.RegularFiles != 4 {
		t.Fatalf("stats after removing progress: %+v, %v", st, err)
	}
}

func TestParseRsyncFailures(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("testdata", "rsync", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		name   string
		stderr string
		max    int
		want   RsyncFailures
	}{
		{
			name:   "sender cannot read (captured, unprivileged rsync)",
			stderr: read("stderr-23-sender-denied.txt"),
			want: RsyncFailures{Total: 4, Paths: []string{
				"/srv/site/locked", "/srv/site/rx", "/srv/site/sub", "/srv/site/secret"}},
		},
		{
			name:   "capped list keeps the total",
			stderr: read("stderr-23-sender-denied.txt"),
			max:    2,
			want:   RsyncFailures{Total: 4, Paths: []string{"/srv/site/locked", "/srv/site/rx"}},
		},
		{
			name:   "receiver rename names the destination",
			stderr: read("stderr-23-receiver-rename.txt"),
			want:   RsyncFailures{Total: 1, Paths: []string{"sub/a"}},
		},
		{
			name:   "receiver mkdir and set times",
			stderr: read("stderr-23-receiver-mkdir.txt"),
			want:   RsyncFailures{Total: 2, Paths: []string{"/backups/s1/t1/.", "/backups/s1/t1/d2"}},
		},
		{
			name:   "vanished",
			stderr: read("stderr-24-vanished.txt"),
			want:   RsyncFailures{Total: 1, Vanished: 1, Paths: []string{"/srv/site/z_small"}},
		},
		{
			name:   "missing root",
			stderr: read("stderr-23-missing-root.txt"),
			want:   RsyncFailures{Total: 1, Paths: []string{"/srv/missing"}},
		},
		{
			name: "readlink_stat, quotes in names, duplicates, deletion skipped",
			stderr: `rsync: [sender] readlink_stat("/srv/a "quoted" link") failed: Permission denied (13)
rsync: [sender] send_files failed to open "/srv/it's": Permission denied (13)
rsync: [sender] send_files failed to open "/srv/it's": Permission denied (13)
IO error encountered -- skipping file deletion
rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1338) [generator=3.2.7]`,
			want: RsyncFailures{Total: 2, DeletionsSkipped: true, Paths: []string{`/srv/a "quoted" link`, "/srv/it's"}},
		},
		{name: "nothing", stderr: "", want: RsyncFailures{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseRsyncFailures(tc.stderr, tc.max)
			if got.Total != tc.want.Total || got.Vanished != tc.want.Vanished ||
				got.DeletionsSkipped != tc.want.DeletionsSkipped || !slices.Equal(got.Paths, tc.want.Paths) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
