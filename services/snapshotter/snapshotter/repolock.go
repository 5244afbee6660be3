package snapshotter

import (
	"context"
	"sync"
)

// repoLock serializes the snapshotter's writers of the restic repository
// within this process. Backups take the shared side and run side by side
// (restic lets backups share the repository); retention takes the
// exclusive side, because prune needs restic's exclusive lock and would
// otherwise wait on, or fail against, this process's own backups. Across
// processes restic's lock and --retry-lock do the same job.
//
// Waiting honours ctx, so a canceled job stops waiting. A waiting
// exclusive holder keeps new shared holders out, so a steady stream of
// backups cannot starve retention; retention in turn waits only for the
// backups already running.
type repoLock struct {
	mu           sync.Mutex
	shared       int  // shared holders
	exclusive    bool // held exclusively
	waitingExcl  int  // exclusive waiters
	changedOrNil chan struct{}
}

// changed returns the channel closed at the next state change. Call with
// mu held.
func (l *repoLock) changed() <-chan struct{} {
	if l.changedOrNil == nil {
		l.changedOrNil = make(chan struct{})
	}
	return l.changedOrNil
}

// broadcast wakes every waiter. Call with mu held.
func (l *repoLock) broadcast() {
	if l.changedOrNil != nil {
		close(l.changedOrNil)
		l.changedOrNil = nil
	}
}

// Shared takes the shared side. When it has to wait, onWait (if not nil)
// is called once, without the lock's mutex held. release may be called
// more than once.
func (l *repoLock) Shared(ctx context.Context, onWait func()) (release func(), err error) {
	l.mu.Lock()
	for l.exclusive || l.waitingExcl > 0 {
		ch := l.changed()
		l.mu.Unlock()
		if onWait != nil {
			onWait()
			onWait = nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		l.mu.Lock()
	}
	l.shared++
	l.mu.Unlock()
	return sync.OnceFunc(func() {
		l.mu.Lock()
		l.shared--
		l.broadcast()
		l.mu.Unlock()
	}), nil
}

// Exclusive takes the exclusive side. When it has to wait, onWait (if not
// nil) is called once with the number of shared holders it waits for.
// release may be called more than once.
func (l *repoLock) Exclusive(ctx context.Context, onWait func(shared int)) (release func(), err error) {
	l.mu.Lock()
	l.waitingExcl++
	for l.exclusive || l.shared > 0 {
		ch, n := l.changed(), l.shared
		l.mu.Unlock()
		if onWait != nil {
			onWait(n)
			onWait = nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			l.mu.Lock()
			l.waitingExcl--
			l.broadcast() // shared waiters may go ahead now
			l.mu.Unlock()
			return nil, context.Cause(ctx)
		}
		l.mu.Lock()
	}
	l.waitingExcl--
	l.exclusive = true
	l.mu.Unlock()
	return sync.OnceFunc(func() {
		l.mu.Lock()
		l.exclusive = false
		l.broadcast()
		l.mu.Unlock()
	}), nil
}
