package puller

import (
	"fmt"
	"strings"
	"testing"
)

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
