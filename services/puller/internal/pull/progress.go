package pull

import (
	"bytes"
	"fmt"
	"time"

	"github.com/satoru/satoru/shared/remote"
)

// throttle passes progress on at most once per interval: the first update
// at once, later ones only when every has passed since the last one sent.
// Updates in between are dropped, not queued, so a fast transfer costs the
// callback nothing more.
type throttle struct {
	every time.Duration
	now   func() time.Time
	fn    func(Progress)
	last  time.Time
	sent  bool
}

func newThrottle(every time.Duration, fn func(Progress)) *throttle {
	return &throttle{every: every, now: time.Now, fn: fn}
}

// offer sends the progress build returns when it is time; build is called
// only then.
func (t *throttle) offer(build func() Progress) {
	if t.fn == nil {
		return
	}
	now := t.now()
	if t.sent && now.Sub(t.last) < t.every {
		return
	}
	t.sent, t.last = true, now
	t.fn(build())
}

// rate formats bytes per second the way rsync prints it (1024-based).
func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "0.00kB/s"
	}
	bps := float64(n) / d.Seconds()
	switch {
	case bps >= 1<<30:
		return fmt.Sprintf("%.2fGB/s", bps/(1<<30))
	case bps >= 1<<20:
		return fmt.Sprintf("%.2fMB/s", bps/(1<<20))
	default:
		return fmt.Sprintf("%.2fkB/s", bps/(1<<10))
	}
}

// Limits of rsyncOutput's buffers.
const (
	// maxRecord bounds one '\r'/'\n'-separated record. Progress records
	// are under 100 bytes; an itemized symlink whose name and target are
	// both PATH_MAX long and fully escaped (4 bytes a byte) stays under it.
	// A longer record is dropped whole, never cut into pieces that could
	// pass for other records (a cut name could name an older folder).
	maxRecord = 64 << 10
	// restCap bounds the non-progress output kept for ParseRsyncStats;
	// the --stats block is well under 2 KB and comes last.
	restCap = 64 << 10
)

// rsyncOutput is rsync's stdout as a stream: --info=progress2 records
// ('\r'-separated) go to the throttle, --itemize-changes lines naming a
// created folder or link to created, other itemized lines nowhere, and
// everything else (the --stats block) is kept, its last restCap bytes,
// for ParseRsyncStats. Nothing grows with the transfer's size. os/exec
// writes from one goroutine and Run returns only after it is done, so no
// locking is needed.
type rsyncOutput struct {
	hash    string
	tick    *throttle
	created func(kind byte, name []byte)
	partial []byte
	// overflow: the record being read went past maxRecord; it is
	// dropped up to its end.
	overflow bool
	rest     []byte
}

func (o *rsyncOutput) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexAny(p, "\r\n")
		if i < 0 {
			o.add(p)
			break
		}
		if o.add(p[:i]) {
			o.record(o.partial)
		}
		o.partial, o.overflow = o.partial[:0], false
		p = p[i+1:]
	}
	return n, nil
}

// add appends to the record being read and reports whether it is still
// within maxRecord.
func (o *rsyncOutput) add(p []byte) bool {
	if !o.overflow && len(o.partial)+len(p) > maxRecord {
		o.overflow, o.partial = true, o.partial[:0]
	}
	if o.overflow {
		return false
	}
	o.partial = append(o.partial, p...)
	return true
}

func (o *rsyncOutput) record(rec []byte) {
	if len(bytes.TrimSpace(rec)) == 0 {
		return
	}
	if kind, name, ok := itemized(rec); ok {
		if kind != 0 && o.created != nil {
			o.created(kind, name)
		}
		return
	}
	if pr, ok := remote.ParseRsyncProgress(string(rec)); ok {
		o.tick.offer(func() Progress {
			return Progress{TargetHash: o.hash, BytesDone: pr.Bytes, Percent: pr.Percent, Rate: pr.Rate}
		})
		return
	}
	o.rest = append(o.rest, rec...)
	o.rest = append(o.rest, '\n')
	if len(o.rest) > 2*restCap {
		o.rest = append(o.rest[:0], o.rest[len(o.rest)-restCap:]...)
	}
}

// output returns the non-progress output, the unterminated last record
// included.
func (o *rsyncOutput) output() []byte {
	if len(o.partial) > 0 && !o.overflow {
		o.record(o.partial)
	}
	o.partial, o.overflow = o.partial[:0], false
	return o.rest
}
