package snapshotter

import (
	"context"
	"errors"
	"testing"
	"time"
)

// acquired runs take in a goroutine and reports on the channel when it
// returns.
func acquired(take func() (func(), error)) <-chan func() {
	ch := make(chan func(), 1)
	go func() {
		release, err := take()
		if err != nil {
			close(ch)
			return
		}
		ch <- release
	}()
	return ch
}

func mustGet(t *testing.T, ch <-chan func(), what string) func() {
	t.Helper()
	select {
	case release, ok := <-ch:
		if !ok {
			t.Fatalf("%s: failed", what)
		}
		return release
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: still waiting", what)
	}
	return nil
}

func mustWait(t *testing.T, ch <-chan func(), what string) {
	t.Helper()
	select {
	case <-ch:
		t.Fatalf("%s: got the lock, want it to wait", what)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestRepoLock(t *testing.T) {
	ctx := context.Background()

	t.Run("shared holders overlap", func(t *testing.T) {
		var l repoLock
		waited := false
		r1, err := l.Shared(ctx, func() { waited = true })
		if err != nil {
			t.Fatal(err)
		}
		r2, err := l.Shared(ctx, func() { waited = true })
		if err != nil {
			t.Fatal(err)
		}
		if waited {
			t.Error("a shared holder waited for another")
		}
		r1()
		r2()
	})

	t.Run("exclusive waits for every shared holder, then keeps new ones out", func(t *testing.T) {
		var l repoLock
		r1, _ := l.Shared(ctx, nil)
		r2, _ := l.Shared(ctx, nil)
		waitedFor := make(chan int, 1)
		excl := acquired(func() (func(), error) { return l.Exclusive(ctx, func(n int) { waitedFor <- n }) })
		if n := <-waitedFor; n != 2 {
			t.Errorf("exclusive waited for %d shared holders, want 2", n)
		}
		mustWait(t, excl, "exclusive with two shared holders")

		// A waiting exclusive holder goes first: a new backup waits.
		sharedWaited := make(chan struct{})
		late := acquired(func() (func(), error) { return l.Shared(ctx, func() { close(sharedWaited) }) })
		<-sharedWaited
		r1()
		mustWait(t, excl, "exclusive with one shared holder")
		r2()
		r2() // release is idempotent
		release := mustGet(t, excl, "exclusive")
		mustWait(t, late, "shared while exclusive is held")
		release()
		mustGet(t, late, "shared after exclusive")()
	})

	t.Run("exclusive holders exclude each other", func(t *testing.T) {
		var l repoLock
		r1, _ := l.Exclusive(ctx, nil)
		second := acquired(func() (func(), error) { return l.Exclusive(ctx, nil) })
		mustWait(t, second, "second exclusive")
		r1()
		mustGet(t, second, "second exclusive")()
	})

	t.Run("a canceled wait gives up and lets shared holders in", func(t *testing.T) {
		var l repoLock
		held, _ := l.Shared(ctx, nil)
		cctx, cancel := context.WithCancelCause(ctx)
		excl := make(chan error, 1)
		exclWaits := make(chan struct{})
		go func() {
			_, err := l.Exclusive(cctx, func(int) { close(exclWaits) })
			excl <- err
		}()
		<-exclWaits
		late := acquired(func() (func(), error) { return l.Shared(ctx, nil) })
		mustWait(t, late, "shared behind a waiting exclusive")
		stop := errors.New("job canceled")
		cancel(stop)
		if err := <-excl; !errors.Is(err, stop) {
			t.Fatalf("err = %v, want the cancel cause", err)
		}
		mustGet(t, late, "shared after the exclusive waiter left")()
		held()

		sctx, scancel := context.WithCancel(ctx)
		x, _ := l.Exclusive(ctx, nil)
		scancel()
		if _, err := l.Shared(sctx, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("shared wait: err = %v, want context.Canceled", err)
		}
		x()
	})
}
