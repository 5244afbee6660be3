package disk

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/satoru/satoru/shared/units"
)

func TestHeadroomCheck(t *testing.T) {
	dir := t.TempDir()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < 2<<20 {
		t.Fatalf("test needs some free space in %s, has %d bytes", dir, free)
	}
	// A later file (or another test) may change free space a little:
	// limits are far from it either way.
	above := free * 4
	// Free space as it appears in the error: "(<n> bytes) free".
	freeRE := regexp.MustCompile(`\((\d+) bytes\) free`)

	t.Run("enough", func(t *testing.T) {
		if err := (Headroom{MinFreeBytes: 1 << 20, MinFreePercent: 1}).Check(dir, dir); err != nil {
			t.Fatal(err)
		}
		if err := (Headroom{MinFreeBytes: 0, MinFreePercent: 0}).Check(dir); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("bytes below the limit", func(t *testing.T) {
		err := (Headroom{MinFreeBytes: above, MinFreePercent: 0}).Check(dir)
		t.Log(err)
		if !errors.Is(err, ErrLowDiskSpace) {
			t.Fatalf("err = %v, want ErrLowDiskSpace", err)
		}
		msg := err.Error()
		for _, want := range []string{dir + " has ", "iB (", "below the minimum of ", strconv.FormatInt(above, 10) + " bytes", units.Bytes(above)} {
			if !strings.Contains(msg, want) {
				t.Errorf("%q lacks %q", msg, want)
			}
		}
		m := freeRE.FindStringSubmatch(msg)
		if m == nil {
			t.Fatalf("%q does not give the exact free bytes", msg)
		}
		if n, _ := strconv.ParseInt(m[1], 10, 64); n < free/2 || n > free*2 {
			t.Errorf("reported %d bytes free, statfs said %d", n, free)
		}
	})

	t.Run("percent below the limit", func(t *testing.T) {
		err := (Headroom{MinFreeBytes: 0, MinFreePercent: 100}).Check(dir)
		t.Log(err)
		if !errors.Is(err, ErrLowDiskSpace) || !strings.Contains(err.Error(), dir+" has ") ||
			!strings.Contains(err.Error(), "below the minimum of 100%") || !freeRE.MatchString(err.Error()) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("path not created yet is checked at its parent", func(t *testing.T) {
		child := filepath.Join(dir, "backups", "site", "target")
		if err := (Headroom{MinFreeBytes: 1 << 20, MinFreePercent: 1}).Check(child); err != nil {
			t.Fatal(err)
		}
		err := (Headroom{MinFreeBytes: above, MinFreePercent: 0}).Check(child)
		t.Log(err)
		if !errors.Is(err, ErrLowDiskSpace) || !strings.Contains(err.Error(), child+" (not created yet; checked at "+dir+")") {
			t.Fatalf("err = %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "backups")); !os.IsNotExist(err) {
			t.Error("Check created the path")
		}
	})

	t.Run("relative path", func(t *testing.T) {
		t.Chdir(dir)
		if err := (Headroom{MinFreeBytes: 1 << 20, MinFreePercent: 0}).Check("./backups"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("first failing path is named", func(t *testing.T) {
		other := t.TempDir()
		err := (Headroom{MinFreeBytes: above, MinFreePercent: 0}).Check(other, dir)
		if err == nil || !strings.Contains(err.Error(), other+" has ") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("bad limits", func(t *testing.T) {
		for _, l := range [][2]int64{{-1, 0}, {0, -1}, {0, 101}} {
			if err := (Headroom{MinFreeBytes: l[0], MinFreePercent: int(l[1])}).Check(dir); err == nil || errors.Is(err, ErrLowDiskSpace) {
				t.Errorf("limits %v: err = %v", l, err)
			}
		}
	})
}

func TestStat(t *testing.T) {
	dir := t.TempDir()
	space, err := Stat(dir)
	if err != nil || space.TotalBytes <= 0 || space.FreeBytes < 0 || space.FreeBytes > space.TotalBytes || space.CheckedAt != dir || !space.Exists {
		t.Fatalf("Stat(%s) = %+v, %v", dir, space, err)
	}
	// A path not created yet is measured at its nearest existing parent.
	later := filepath.Join(dir, "not", "yet")
	space, err = Stat(later)
	if err != nil || space.CheckedAt != dir || space.Exists {
		t.Errorf("Stat(%s) = %+v, %v; want measured at %s", later, space, err, dir)
	}
	// Below a file: the file's folder.
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if space, err = Stat(filepath.Join(file, "x")); err != nil || space.CheckedAt != file {
		t.Errorf("Stat below a file = %+v, %v", space, err)
	}
}

// The floor the metrics export (MinBytes) is the line Judge refuses
// below: one rule, whichever limit is the larger.
func TestHeadroomFloorMatchesJudge(t *testing.T) {
	const gib = int64(1) << 30
	total := 100 * gib
	cases := []struct {
		name  string
		h     Headroom
		floor int64
	}{
		{"bytes larger", Headroom{MinFreeBytes: 10 * gib, MinFreePercent: 5}, 10 * gib},
		{"percent larger", Headroom{MinFreeBytes: gib, MinFreePercent: 5}, 5 * gib},
		{"bytes only", Headroom{MinFreeBytes: 3 * gib}, 3 * gib},
		{"percent only", Headroom{MinFreePercent: 20}, 20 * gib},
		{"none", Headroom{}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.h.MinBytes(total); got != tc.floor {
				t.Fatalf("MinBytes = %d, want %d", got, tc.floor)
			}
			at := Space{FreeBytes: tc.floor, TotalBytes: total, CheckedAt: "/b", Exists: true}
			if err := tc.h.Judge("/b", at); err != nil {
				t.Errorf("exactly the floor free: %v", err)
			}
			if tc.floor == 0 {
				return
			}
			below := at
			below.FreeBytes--
			if err := tc.h.Judge("/b", below); !errors.Is(err, ErrLowDiskSpace) {
				t.Errorf("one byte below the floor: err = %v, want ErrLowDiskSpace", err)
			}
		})
	}
}
