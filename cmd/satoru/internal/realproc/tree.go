package realproc

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The benchmark site: benchFiles files in benchDirs nested folders, about
// benchBytes in all, written from a fixed seed so every run backs up the
// same bytes.
const (
	benchFiles      = 5000
	benchLargeFiles = 120
	benchDirs       = 400
	benchBytes      = 200_000_000
	benchSeed       = 20261125
)

// BenchTree writes the benchmark site under root from benchSeed: about
// benchFiles files in benchDirs folders up to five deep, sized like a web
// site (many small files from 256 B to 128 KiB, three in four of them text,
// the rest binary; benchLargeFiles binary files from ~0.2 to ~1.5 MB), the
// large ones scaled so the total is benchBytes. Text compresses, binary
// does not, as with code and media.
func BenchTree(b testing.TB, root string) (files int, total int64) {
	b.Helper()
	rng := rand.New(rand.NewPCG(benchSeed, benchSeed))
	dirs := []string{"."}
	depth := map[string]int{".": 0}
	for i := 1; i < benchDirs; i++ {
		parent := dirs[rng.IntN(len(dirs))]
		if depth[parent] >= 5 {
			parent = "."
		}
		d := filepath.Join(parent, fmt.Sprintf("d%03d", i))
		dirs, depth[d] = append(dirs, d), depth[parent]+1
	}
	for _, d := range dirs {
		mkdirB(b, filepath.Join(root, d))
	}

	small := benchFiles - benchLargeFiles
	sizes := make([]int64, benchFiles)
	var smallSum int64
	for i := range small {
		sizes[i] = int64(math.Exp(math.Log(256) + rng.Float64()*(math.Log(128<<10)-math.Log(256))))
		smallSum += sizes[i]
	}
	weights := make([]float64, benchLargeFiles)
	var wsum float64
	for i := range weights {
		weights[i] = 0.25 + 1.5*rng.Float64()
		wsum += weights[i]
	}
	left := int64(benchBytes) - smallSum
	for i := range weights {
		sizes[small+i] = int64(float64(left) * weights[i] / wsum)
	}
	sizes[benchFiles-1] += int64(benchBytes) - sum(sizes)

	buf := make([]byte, 0, 2<<20)
	for i, sz := range sizes {
		text := i < small && rng.IntN(4) != 0
		ext := ".bin"
		if text {
			ext = [...]string{".php", ".js", ".css", ".html", ".txt"}[rng.IntN(5)]
		}
		p := filepath.Join(root, dirs[rng.IntN(len(dirs))], fmt.Sprintf("f%04d%s", i, ext))
		var seed [32]byte
		for k := range 4 {
			v := rng.Uint64()
			for j := range 8 {
				seed[k*8+j] = byte(v >> (8 * j))
			}
		}
		buf = fill(buf[:0], sz, text, rand.NewChaCha8(seed))
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			b.Fatal(err)
		}
		total += sz
	}
	return len(sizes), total
}

// mkdirB is mkdir for a benchmark.
func mkdirB(b testing.TB, path string) {
	b.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		b.Fatal(err)
	}
}

func sum(v []int64) int64 {
	var s int64
	for _, x := range v {
		s += x
	}
	return s
}

var benchWords = strings.Fields(`function return array string public private static const var let
if else for foreach while echo include require class extends new this self null true false
div span class id href src style width height margin padding color background border font
the a of to and in is it you that he was for on are with as his they be at one have this from
user post comment page site config cache session request response header body footer nav
$id $name $value $data $result $query $row $item $key $i ; { } ( ) [ ] = == => -> :: < > </div>`)

// fill appends n bytes to buf: words and line breaks for text, else the
// generator's raw bytes.
func fill(buf []byte, n int64, text bool, g *rand.ChaCha8) []byte {
	if !text {
		buf = slices.Grow(buf, int(n))[:n]
		_, _ = g.Read(buf)
		return buf
	}
	r := rand.New(g)
	for int64(len(buf)) < n {
		buf = append(buf, benchWords[r.IntN(len(benchWords))]...)
		if r.IntN(10) == 0 {
			buf = append(buf, '\n')
		} else {
			buf = append(buf, ' ')
		}
	}
	return buf[:n]
}

// TreeBytes is the size of the regular files under dir (0 when it is
// absent), temporary files included: what a staging folder holds.
func TreeBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
