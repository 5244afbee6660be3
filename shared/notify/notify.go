// Package notify tells an outside endpoint about jobs that need a human:
// a job that failed, and a site's job type that succeeds again after a
// failure. Delivery is best effort: errors are logged, never returned to
// the job.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/satoru/satoru/shared/config"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/jobrun"
)

// Event names.
const (
	JobFailed    = "job_failed"
	JobRecovered = "job_recovered"
)

// Event is the JSON body POSTed to the webhook.
type Event struct {
	Event    string    `json:"event"`
	JobID    string    `json:"job_id"`
	SiteUUID string    `json:"site_uuid"`
	JobType  string    `json:"job_type"`
	Status   string    `json:"status"`
	Error    string    `json:"error"`
	At       time.Time `json:"at"`
}

// Defaults for a Webhook's delivery.
const (
	Timeout  = 5 * time.Second
	Attempts = 3
)

// Webhook POSTs events as JSON to URL. The URL may carry a token, so it
// is only ever logged redacted.
type Webhook struct {
	URL    string
	Client *http.Client // nil = a client with Timeout
	Log    *slog.Logger // nil = slog.Default()
	// Backoff is the wait before the second attempt, doubled for the
	// third; 0 = 500ms.
	Backoff time.Duration
}

func (w *Webhook) log() *slog.Logger {
	if w.Log != nil {
		return w.Log
	}
	return slog.Default()
}

// Notify POSTs e, trying up to Attempts times with a short backoff on a
// network error or a non-2xx answer. Each try is bounded by Timeout.
// Failures are logged; Notify reports whether the event was delivered.
func (w *Webhook) Notify(ctx context.Context, e Event) bool {
	log := w.log().With("webhook", config.RedactWebhookURL(w.URL), "event", e.Event, "job_id", e.JobID, "site_uuid", e.SiteUUID)
	body, err := json.Marshal(e)
	if err != nil {
		log.Error("webhook: encode event", "err", err)
		return false
	}
	client := w.Client
	if client == nil {
		client = &http.Client{Timeout: Timeout}
	}
	backoff := w.Backoff
	if backoff <= 0 {
		backoff = 500 * time.Millisecond
	}
	for attempt := 1; ; attempt++ {
		err = w.post(ctx, client, body)
		if err == nil {
			log.Debug("webhook delivered", "attempt", attempt)
			return true
		}
		if attempt >= Attempts || ctx.Err() != nil {
			log.Warn("webhook not delivered; giving up", "attempts", attempt, "err", err)
			return false
		}
		log.Debug("webhook attempt failed; retrying", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			log.Warn("webhook not delivered; giving up", "attempts", attempt, "err", ctx.Err())
			return false
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

func (w *Webhook) post(ctx context.Context, client *http.Client, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		// url.Error would print the URL with its token.
		return fmt.Errorf("build request: invalid webhook URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "satoru-webhook")
	resp, err := client.Do(req)
	if err != nil {
		return scrub(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// scrub drops the URL (and with it any token) from a client error.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// Jobs turns job outcomes into webhook events. It keeps the last outcome
// of each (site, job type) in memory to tell a recovery: a success or
// warning is reported as job_recovered only when the previous finished
// job of the same site and type failed. The memory starts empty (it is
// seeded lazily by the outcomes it sees), so after a restart the first
// success is not reported as a recovery even if the job before the
// restart failed. Canceled jobs are neither reported nor remembered.
//
// Events are sent in the background so a slow endpoint never holds a
// job's worker or site lease. Jobs owns those sends: they outlive the job
// that caused them but not the process, so the owner calls Close at
// shutdown, which lets them finish for a while and then drops them with
// a log.
type Jobs struct {
	Webhook *Webhook
	Now     func() time.Time

	mu     sync.Mutex
	failed map[jobKey]bool
	closed bool
	// stop ends the sends in flight when Close gives up waiting; made on
	// the first send.
	stop   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type jobKey struct{ site, typ string }

// Hook has jobrun's Notify signature: set Executor.Notify or
// Service.Notify to it.
func (n *Jobs) Hook(ctx context.Context, job domain.Job, out jobrun.Outcome) {
	e, ok := n.event(job, out)
	if !ok {
		return
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		n.Webhook.log().Warn("webhook event dropped: shutting down", "event", e.Event, "job_id", e.JobID, "site_uuid", e.SiteUUID)
		return
	}
	if n.stop == nil {
		n.stop, n.cancel = context.WithCancel(context.Background())
	}
	// Add under mu, so Close never waits on a group that grows after it
	// has closed.
	n.wg.Add(1)
	stop := n.stop
	n.mu.Unlock()
	// Not the job's ctx: it ends when the job returns, right after this
	// hook, and the send must outlive it.
	go func() {
		defer n.wg.Done()
		n.Webhook.Notify(stop, e)
	}()
}

// Wait waits for the events being sent.
func (n *Jobs) Wait() { n.wg.Wait() }

// Close stops taking events (later ones are dropped with a log) and waits
// for those being sent until ctx ends; then it cancels them, each logging
// that it was not delivered, and returns once their goroutines have.
func (n *Jobs) Close(ctx context.Context) {
	n.mu.Lock()
	n.closed = true
	cancel := n.cancel
	n.mu.Unlock()
	done := make(chan struct{})
	go func() {
		n.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		n.Webhook.log().Warn("webhook sends still running at shutdown; dropping them")
	}
	if cancel != nil {
		cancel()
	}
	<-done
}

// event records the outcome and returns the event to send, if any.
func (n *Jobs) event(job domain.Job, out jobrun.Outcome) (Event, bool) {
	k := jobKey{job.SiteUUID, string(job.Type)}
	var name string
	n.mu.Lock()
	if n.failed == nil {
		n.failed = map[jobKey]bool{}
	}
	switch out.Status {
	case domain.StatusFailed:
		name = JobFailed
		n.failed[k] = true
	case domain.StatusSuccess, domain.StatusWarning:
		if n.failed[k] {
			name = JobRecovered
		}
		n.failed[k] = false
	}
	n.mu.Unlock()
	if name == "" {
		return Event{}, false
	}
	now := time.Now
	if n.Now != nil {
		now = n.Now
	}
	return Event{Event: name, JobID: job.ID, SiteUUID: job.SiteUUID, JobType: string(job.Type),
		Status: string(out.Status), Error: out.Error, At: now().UTC()}, true
}
