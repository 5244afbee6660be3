package puller

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestLocalRestoreArgs(t *testing.T) {
	tests := []struct {
		name    string
		sources []string
		dest    string
		dry     bool
		want    []string
	}{
		{"entries keep their names under dest", []string{"/s/.restore/j/a/t1/", "/s/.restore/j/a/db.sqlite"}, "/srv/r", false,
			[]string{"-rlt", "--chmod=D0700,F0600", "--itemize-changes", "--", "/s/.restore/j/a/t1", "/s/.restore/j/a/db.sqlite", "/srv/r/"}},
		{"dry run", []string{"/x"}, "/srv/r/", true,
			[]string{"-rlt", "--chmod=D0700,F0600", "--itemize-changes", "--dry-run", "--", "/x", "/srv/r/"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := LocalRestoreArgs(tc.sources, tc.dest, tc.dry); !slices.Equal(got, tc.want) {
				t.Errorf("args = %q\nwant   %q", got, tc.want)
			}
		})
	}
}

func TestItemListKeepsTheHeadAndCountsAll(t *testing.T) {
	l := &itemList{max: 3}
	var in strings.Builder
	for i := range 10 {
		fmt.Fprintf(&in, ">f+++++++++ file-%d\n", i)
	}
	b := []byte(in.String())
	// Written in awkward pieces, as a pipe delivers it.
	for len(b) > 0 {
		n := min(7, len(b))
		_, _ = l.Write(b[:n])
		b = b[n:]
	}
	if l.total != 10 || len(l.lines) != 3 || l.lines[2] != ">f+++++++++ file-2" {
		t.Errorf("total %d, lines %q", l.total, l.lines)
	}
}
