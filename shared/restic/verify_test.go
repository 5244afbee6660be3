package restic

import (
	"reflect"
	"testing"
)

func TestVerifyArgs(t *testing.T) {
	id := "0123456789abcdef"
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"ls lists the whole snapshot", LsAllArgs(id), []string{"ls", "--json", "--", id}},
		{"restore reads every file back", RestoreVerifyArgs(id, "/data/verify/job-1"),
			[]string{"restore", "--json", "--verify", "--target", "/data/verify/job-1", "--", id}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("argv = %q, want %q", tc.got, tc.want)
			}
		})
	}
}
