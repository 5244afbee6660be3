package pull

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

func TestCheckHeadroom(t *testing.T) {
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
		if err := CheckHeadroom([]string{dir, dir}, 1<<20, 1); err != nil {
			t.Fatal(err)
		}
		if err := CheckHeadroom([]string{dir}, 0, 0); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("bytes below the limit", func(t *testing.T) {
		err := CheckHeadroom([]string{dir}, above, 0)
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
		err := CheckHeadroom([]string{dir}, 0, 100)
		t.Log(err)
		if !errors.Is(err, ErrLowDiskSpace) || !strings.Contains(err.Error(), dir+" has ") ||
			!strings.Contains(err.Error(), "below the minimum of 100%") || !freeRE.MatchString(err.Error()) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("path not created yet is checked at its parent", func(t *testing.T) {
		child := filepath.Join(dir, "backups", "site", "target")
		if err := CheckHeadroom([]string{child}, 1<<20, 1); err != nil {
			t.Fatal(err)
		}
		err := CheckHeadroom([]string{child}, above, 0)
		t.Log(err)
		if !errors.Is(err, ErrLowDiskSpace) || !strings.Contains(err.Error(), child+" (not created yet; checked at "+dir+")") {
			t.Fatalf("err = %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "backups")); !os.IsNotExist(err) {
			t.Error("CheckHeadroom created the path")
		}
	})

	t.Run("relative path", func(t *testing.T) {
		t.Chdir(dir)
		if err := CheckHeadroom([]string{"./backups"}, 1<<20, 0); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("first failing path is named", func(t *testing.T) {
		other := t.TempDir()
		err := CheckHeadroom([]string{other, dir}, above, 0)
		if err == nil || !strings.Contains(err.Error(), other+" has ") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("bad limits", func(t *testing.T) {
		for _, l := range [][2]int64{{-1, 0}, {0, -1}, {0, 101}} {
			if err := CheckHeadroom([]string{dir}, l[0], int(l[1])); err == nil || errors.Is(err, ErrLowDiskSpace) {
				t.Errorf("limits %v: err = %v", l, err)
			}
		}
	})
}
