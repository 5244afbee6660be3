// Package node starts a Satoru process: the embedded NATS server and store
// when no external ones are configured, the shared clients, and the
// services this process runs. `satoru up` runs them all; `satoru puller`
// runs one against external NATS and MongoDB.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/satoru/satoru/services/api/apiserver"
	"github.com/satoru/satoru/services/puller/puller"
	"github.com/satoru/satoru/services/scheduler/scheduler"
	"github.com/satoru/satoru/services/snapshotter/snapshotter"
	"github.com/satoru/satoru/services/syncer/syncer"
	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/config"
	"github.com/satoru/satoru/shared/conns"
	"github.com/satoru/satoru/shared/disk"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/embedded"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/notify"
	"github.com/satoru/satoru/shared/observe"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/restore"
	"github.com/satoru/satoru/shared/staging"
	"github.com/satoru/satoru/shared/store"
)

// Roles says which services a node runs.
type Roles struct {
	API         bool
	Puller      bool
	Snapshotter bool
	Syncer      bool
	Scheduler   bool
}

// All is every service, as `satoru up` runs them.
var All = Roles{API: true, Puller: true, Snapshotter: true, Syncer: true, Scheduler: true}

// Control is the control plane alone (`satoru control`): what `up`
// runs but the puller and snapshotter, so every backup runs on a joined
// worker node.
var Control = Roles{API: true, Syncer: true, Scheduler: true}

// Worker is a worker node (`satoru worker`): a puller and a snapshotter
// over one local staging, each backup snapshotted where it was pulled.
var Worker = Roles{Puller: true, Snapshotter: true}

// Node is a running Satoru process.
type Node struct {
	Config   config.Config
	Roles    Roles
	Log      *slog.Logger
	Registry *prometheus.Registry

	NATS     *embedded.NATS  // nil unless embedded
	StoreSrv *embedded.Store // nil unless embedded
	NC       *nats.Conn
	Store    *store.Store
	Infra    *bus.Infra

	// APIAddr is the address the API listens on, when it runs.
	APIAddr string
	// TokenFile is where a generated API token was written ("" when the
	// token came from the environment or api_token_file).
	TokenFile string
	// NATSURL is the NATS this node uses, or the embedded server's
	// listener (without credentials); "" for an embedded server that
	// serves this process only.
	NATSURL string
	// StoreURI is the store this node uses (the embedded store's socket).
	StoreURI string
	// StagingID is the id of staging_root (shared/staging) when this
	// node pulls or snapshots, else "".
	StagingID string

	conns  *conns.Conns
	notify *notify.Jobs // nil without webhook_url; closed after the services stop
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
}

// Start brings a node up. Services run until ctx ends or Stop is called;
// Wait returns after everything has shut down.
func Start(ctx context.Context, cfg config.Config, roles Roles, log *slog.Logger) (_ *Node, err error) {
	ctx, cancel := context.WithCancel(ctx)
	// A local, not the named result: a failed Start returns nil while the
	// services' closures, which use n, are still stopping, and what it
	// started must still be closed.
	n := &Node{Config: cfg, Roles: roles, Log: log, Registry: observe.NewRegistry(), cancel: cancel}
	defer func() {
		if err != nil {
			cancel()
			n.wg.Wait() // services started before the failure
			n.close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data_dir %s: %w", cfg.DataDir, err)
	}
	if err := n.connect(ctx); err != nil {
		return nil, err
	}
	// Every service reads the one local repository: the snapshotter and
	// syncer write it, the puller restores from it, the API browses it.
	repo, err := ResticRepo(cfg)
	if err != nil {
		return nil, err
	}
	// Job outcome notifications (webhook_url): one notifier shared by the
	// puller, snapshotter and syncer, so a backup that fails in the puller
	// and succeeds later in the snapshotter counts as a recovery.
	var hook func(context.Context, domain.Job, jobrun.Outcome)
	if cfg.WebhookURL != "" {
		n.notify = &notify.Jobs{Webhook: &notify.Webhook{URL: cfg.WebhookURL, Log: log.With("service", "notify")}}
		hook = n.notify.Hook
		log.Info("job webhook notifications on", "webhook_url", cfg.RedactedWebhookURL())
	}
	// A node that pulls and snapshots (satoru up, satoru worker) takes a
	// backup's snapshot in process, right after its pull: the data never
	// leaves the staging that pulled it. The snapshotter's consumer still
	// takes retention jobs and the snapshot requests of separate pullers.
	var local map[string]func(domain.Job) (jobrun.Work, error)
	var snap *snapshotter.Snapshotter
	if roles.Puller || roles.Snapshotter {
		// Created here (the services read the same) to name it in the banner.
		if n.StagingID, err = staging.ID(cfg.StagingRoot); err != nil {
			return nil, fmt.Errorf("config: staging_root: %w", err)
		}
	}
	// The services' metrics carry the node (the staging id) in a process
	// that has one, so a fleet's series tell the workers apart. All the
	// services of the process share the label: they share series (job
	// metrics), whose label names must agree.
	var reg prometheus.Registerer = n.Registry
	if n.StagingID != "" {
		reg = prometheus.WrapRegistererWith(prometheus.Labels{"node": n.StagingID}, n.Registry)
	}
	snapSettings := SnapshotterSettings(cfg, repo)
	if roles.Snapshotter && cfg.ResticB2Repository != "" {
		// The check job checks the offsite repository too.
		sync, err := SyncerSettings(cfg, repo)
		if err != nil {
			return nil, err
		}
		snapSettings.Offsite = sync.Remote
	}
	snapDeps := snapshotter.Deps{Settings: snapSettings, Store: n.Store, Infra: n.Infra, Registry: reg, Log: log, Notify: hook}
	if roles.Snapshotter {
		if snap, err = snapshotter.New(snapDeps); err != nil {
			return nil, err
		}
		if roles.Puller {
			local = map[string]func(domain.Job) (jobrun.Work, error){events.StepSnapshot: snap.Pick}
		}
	}
	if roles.Puller {
		n.goService(domain.ServicePuller, func(ctx context.Context) error {
			return puller.Run(ctx, puller.Deps{Settings: PullerSettings(cfg), Store: n.Store, Infra: n.Infra, Registry: reg, Log: log, Restic: repo, Notify: hook, Local: local})
		}, ctx)
	}
	if roles.Snapshotter || roles.Syncer {
		if roles.Snapshotter {
			n.goService(domain.ServiceSnapshotter, func(ctx context.Context) error {
				return snapshotter.Serve(ctx, snapDeps, snap)
			}, ctx)
		}
		if roles.Syncer {
			settings, err := SyncerSettings(cfg, repo)
			if err != nil {
				return nil, err
			}
			n.goService(domain.ServiceSyncer, func(ctx context.Context) error {
				return syncer.Run(ctx, syncer.Deps{Settings: settings, Store: n.Store, Infra: n.Infra, Registry: reg, Log: log, Notify: hook})
			}, ctx)
		}
	}
	if roles.Scheduler {
		n.goService(domain.ServiceScheduler, func(ctx context.Context) error {
			return scheduler.Run(ctx, scheduler.Deps{Settings: SchedulerSettings(cfg), Store: n.Store, Infra: n.Infra, Registry: reg, Log: log})
		}, ctx)
	}
	if roles.API {
		if err := n.startAPI(ctx, repo); err != nil {
			return nil, err
		}
	} else if err := n.startMetrics(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// LivenessTTL is how long a service instance stays listed without a
// renewal: the site lease, so a dead worker node's sites move on within
// about the time its lease takes to expire, but at least 10 s, so a slow
// renewal on a busy host does not move sites away and back.
func LivenessTTL(cfg config.Config) time.Duration {
	return max(cfg.SiteLease, 10*time.Second)
}

// PullerSettings maps config to the puller's settings.
func PullerSettings(cfg config.Config) puller.Settings {
	return puller.Settings{
		Worker:         cfg.InstanceName,
		Concurrency:    cfg.JobWorkerConcurrency,
		AckWait:        cfg.JobAckWait,
		Heartbeat:      cfg.JobHeartbeat,
		LeaseRetry:     time.Second,
		RetryBase:      cfg.JobRetryBase,
		MaxAttempts:    cfg.JobMaxAttempts,
		ConnectTimeout: cfg.SSHConnectTimeout,
		PreflightLimit: cfg.JobTimeoutPreflight,
		PreflightReuse: cfg.PreflightReuse,
		KnownHostsDir:  cfg.SSHKnownHostsDir,
		RemoteTmpDir:   cfg.RemoteTmpDir,
		ResticBin:      cfg.ResticBin,
		Protected:      ProtectedAreas(cfg),
		Backup: puller.BackupSettings{
			StagingRoot:    cfg.StagingRoot,
			RepoPath:       cfg.ResticRepoPath,
			MinFreeBytes:   cfg.StagingMinFreeBytes,
			MinFreePercent: cfg.StagingMinFreePercent,
			IOTimeout:      5 * time.Minute,
			TargetTimeout:  cfg.JobTimeoutTarget,
			ProgressEvery:  5 * time.Second,
			ControlDir:     filepath.Join(cfg.DataDir, "ssh", "cm"),
		},
	}
}

// ProtectedAreas are Satoru's own paths that no local restore may write
// into or over: its data folder (store, NATS, known_hosts, tokens,
// generated secrets), staging, the repository, and the secret files the
// config names.
func ProtectedAreas(cfg config.Config) []restore.Area {
	// A repository at a backend URL is no local area ("" is skipped).
	repoDir, _ := restic.LocalPath(cfg.ResticRepoPath)
	return []restore.Area{
		{Key: "data_dir", Path: cfg.DataDir},
		{Key: "staging_root", Path: cfg.StagingRoot},
		{Key: "restic_repo_path", Path: repoDir},
		{Key: "ssh_known_hosts_dir", Path: cfg.SSHKnownHostsDir},
		{Key: "restic_password_file", Path: cfg.ResticPasswordFile},
		{Key: "api_token_file", Path: cfg.APITokenFile},
		{Key: "restic_b2_account_id_file", Path: cfg.ResticB2AccountIDFile},
		{Key: "restic_b2_account_key_file", Path: cfg.ResticB2AccountKeyFile},
		{Key: "restic_repo_account_id_file", Path: cfg.ResticRepoAccountIDFile},
		{Key: "restic_repo_account_key_file", Path: cfg.ResticRepoAccountKeyFile},
	}
}

// SnapshotterSettings maps config to the snapshotter's settings.
func SnapshotterSettings(cfg config.Config, repo restic.Repo) snapshotter.Settings {
	return snapshotter.Settings{
		Worker:         cfg.InstanceName,
		Concurrency:    cfg.JobWorkerConcurrency,
		AckWait:        cfg.JobAckWait,
		Heartbeat:      cfg.JobHeartbeat,
		LeaseRetry:     time.Second,
		RetryBase:      cfg.JobRetryBase,
		MaxAttempts:    cfg.JobMaxAttempts,
		StagingRoot:    cfg.StagingRoot,
		Repo:           repo,
		ProgressEvery:  5 * time.Second,
		Retention:      cfg.ResticRetentionPolicy,
		SnapshotLimit:  cfg.JobTimeoutSnapshot,
		RetentionLimit: cfg.JobTimeoutRetention,
		CheckSubset:    cfg.ResticCheckSubset,
		// A check reads data like a sync copies it: the sync's limit.
		CheckLimit:     cfg.JobTimeoutSync,
		VerifyRoot:     filepath.Join(cfg.DataDir, "verify"),
		VerifyLimit:    cfg.JobTimeoutSnapshot,
		VerifyHeadroom: disk.Headroom{MinFreeBytes: cfg.StagingMinFreeBytes, MinFreePercent: cfg.StagingMinFreePercent},
	}
}

// SchedulerSettings maps config to the scheduler's settings.
func SchedulerSettings(cfg config.Config) scheduler.Settings {
	return scheduler.Settings{
		Instance:          cfg.InstanceName,
		Tick:              cfg.SchedulerTick,
		ScanInterval:      cfg.SiteScanInterval,
		RetentionInterval: cfg.RetentionInterval,
		VerifyInterval:    cfg.VerifyInterval,
		SyncInterval:      cfg.ResticSyncInterval,
		SyncEnabled:       cfg.ResticB2Repository != "",
		CheckInterval:     cfg.ResticCheckInterval,
		LeaderTTL:         cfg.SiteLease,
		StaleAfter:        cfg.JobStaleAfter,
		MaxAttempts:       cfg.JobMaxAttempts,
		HistoryRetention:  cfg.HistoryRetention,
		AuditRetention:    cfg.AuditRetention,
	}
}

// SyncerSettings maps config to the syncer's settings: the offsite
// repository shares the local one's password; its credentials reach
// restic only through its environment.
func SyncerSettings(cfg config.Config, local restic.Repo) (syncer.Settings, error) {
	s := syncer.Settings{
		Worker:      cfg.InstanceName,
		Concurrency: 1,
		AckWait:     cfg.JobAckWait,
		Heartbeat:   cfg.JobHeartbeat,
		LeaseRetry:  5 * time.Second,
		MaxAttempts: cfg.JobMaxAttempts,
		Local:       local,
		SyncLimit:   cfg.JobTimeoutSync,
	}
	if cfg.ResticB2Repository == "" {
		return s, nil
	}
	remote, err := syncer.RemoteRepo(local, cfg.ResticB2Repository, cfg.ResticB2AccountID.Value(), cfg.ResticB2AccountKey.Value())
	if err != nil {
		return s, fmt.Errorf("config: restic_b2_repository: %w", err)
	}
	// restic retries a failing backend for up to 15 minutes per operation;
	// an unreachable offsite fails the sync after restic_b2_retry_seconds.
	remote.BackendRetryLimit = cfg.ResticB2Retry
	s.Remote = remote
	return s, nil
}

// ResticRepo is Satoru's repository (restic_repo_path: a folder or a
// backend URL shared by every worker), with its credentials
// (restic_repo_account_id / _key) in restic's environment only, and its
// password from SATORU_RESTIC_PASSWORD or restic_password_file, or else
// one generated once into <data_dir>/restic-password (0600). Losing that
// password loses the backups: the start-up banner says where it is.
func ResticRepo(cfg config.Config) (restic.Repo, error) {
	env, err := restic.CredentialsEnv(cfg.ResticRepoPath, cfg.ResticRepoAccountID.Value(), cfg.ResticRepoAccountKey.Value())
	if err != nil {
		return restic.Repo{}, fmt.Errorf("config: restic_repo_path %s with restic_repo_account_id/restic_repo_account_key: %w",
			restic.RedactLocation(cfg.ResticRepoPath), err)
	}
	repo := restic.Repo{Bin: restic.FindBin(cfg.ResticBin), Repository: cfg.ResticRepoPath, RetryLock: 5 * time.Minute,
		CacheDir: filepath.Join(cfg.DataDir, "restic-cache"), Env: env}
	if cfg.ResticPassword.IsSet() {
		repo.Password = cfg.ResticPassword.Value()
		return repo, nil
	}
	path := ResticPasswordFile(cfg)
	if err := checkGenerated(path); err != nil {
		return repo, fmt.Errorf("restic password (generated, restic_password_file unset): %w", err)
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		buf := make([]byte, 32)
		if _, err := rand.Read(buf); err != nil {
			return repo, fmt.Errorf("generate restic password: %w", err)
		}
		if err := os.WriteFile(path, []byte(hex.EncodeToString(buf)+"\n"), 0o600); err != nil {
			return repo, fmt.Errorf("write restic password to %s: %w", path, err)
		}
	} else if err != nil {
		return repo, fmt.Errorf("restic password file %s: %w", path, err)
	}
	repo.PasswordFile = path
	return repo, nil
}

// checkGenerated refuses a secret Satoru generated into data_dir once its
// mode lets its group or others in (it was written 0600): someone changed
// it, and another local user may have read it. A missing file is fine.
func checkGenerated(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return config.CheckSecretMode(path, fi.Mode())
}

// ResticPasswordFile is where a generated repository password lives.
func ResticPasswordFile(cfg config.Config) string {
	return filepath.Join(cfg.DataDir, "restic-password")
}

func (n *Node) connect(ctx context.Context) error {
	cfg := n.Config
	natsURL, mongoURI := cfg.NATSURL, cfg.MongoURI
	var natsOpts []nats.Option
	if natsURL == "" {
		opt, err := n.startEmbeddedNATS()
		if err != nil {
			return err
		}
		natsOpts = append(natsOpts, opt)
	} else {
		n.NATSURL = natsURL
	}
	if mongoURI == "" {
		var err error
		if mongoURI, err = n.startEmbeddedStore(ctx); err != nil {
			return err
		}
	}
	n.StoreURI = mongoURI
	c, err := conns.Open(ctx, conns.Options{
		Name:          "satoru-" + cfg.InstanceName,
		NATSURL:       natsURL,
		NATSOptions:   natsOpts,
		MongoURI:      mongoURI,
		MongoDatabase: cfg.MongoDatabase,
		Bus:           bus.Settings{LeaseTTL: cfg.SiteLease, AckWait: cfg.JobAckWait, Replicas: cfg.NATSReplicas, ServiceTTL: LivenessTTL(cfg)},
	})
	if err != nil {
		return err
	}
	n.conns = c
	n.NC, n.Store, n.Infra = c.NC, c.Store, c.Bus
	if err := n.Store.EnsureSchedules(ctx); err != nil {
		return err
	}
	if n.StoreSrv != nil {
		// Open created the collections; index their _id lookups now rather
		// than at the store's next periodic pass.
		if _, err := n.StoreSrv.IndexIDs(ctx); err != nil {
			n.Log.Warn("indexing the embedded store's ids failed; lookups scan until the next pass", "err", err)
		}
	}
	return nil
}

func (n *Node) startAPI(ctx context.Context, repo restic.Repo) error {
	cfg := n.Config
	token, tokenFile, err := APIToken(cfg)
	if err != nil {
		return err
	}
	n.TokenFile = tokenFile
	ln, err := net.Listen("tcp", cfg.APIListen)
	if err != nil {
		return fmt.Errorf("api_listen %s: %w", cfg.APIListen, err)
	}
	n.APIAddr = ln.Addr().String()
	h := apiserver.New(apiserver.Deps{
		Context:    ctx,
		Store:      n.Store,
		Dispatcher: n.Infra,
		Token:      token,
		Registry:   n.Registry,
		Ready:      []apiserver.Checker{apiserver.CheckFunc("store", n.Store.Ping), apiserver.CheckFunc("nats", n.natsReady)},
		Log:        n.Log.With("service", domain.ServiceAPI),
		Repo:       repo,
		Services:   n.Infra,
		Nodes:      n.Infra,
		Events:     n.Infra,
		Schedules:  n.Store,
		// This process's puller sees the same filesystem, so a restore
		// into Satoru's own files is refused before it is queued.
		RestoreGuard: n.restoreGuard(),
		SiteDeleted:  n.siteDeleted(),

		OffsiteConfigured: cfg.ResticB2Repository != "",
		SyncInterval:      cfg.ResticSyncInterval,
		CheckInterval:     cfg.ResticCheckInterval,
		Disks: []apiserver.DiskCheck{
			{Name: "staging_root", Path: cfg.StagingRoot, MinFreeBytes: cfg.StagingMinFreeBytes, MinFreePercent: cfg.StagingMinFreePercent},
			repoDisk(cfg),
		},
	})
	n.goService(domain.ServiceAPI, func(ctx context.Context) error { return apiserver.Serve(ctx, ln, h) }, ctx)
	return nil
}

// repoDisk is the repository's line in /health's disks: its folder, or
// its redacted location marked remote (a backend URL has no local free
// space).
func repoDisk(cfg config.Config) apiserver.DiskCheck {
	d := apiserver.DiskCheck{Name: "restic_repo_path", MinFreeBytes: cfg.StagingMinFreeBytes, MinFreePercent: cfg.StagingMinFreePercent}
	if dir, ok := restic.LocalPath(cfg.ResticRepoPath); ok {
		d.Path = dir
	} else {
		d.Path, d.Remote = restic.RedactLocation(cfg.ResticRepoPath), true
	}
	return d
}

func (n *Node) restoreGuard() *restore.Guard {
	if !n.Roles.Puller {
		return nil
	}
	return &restore.Guard{Areas: ProtectedAreas(n.Config)}
}

// siteDeleted removes a deleted site's known_hosts file at once when this
// process's puller keeps it; other pullers sweep theirs.
func (n *Node) siteDeleted() func(context.Context, string) error {
	if !n.Roles.Puller {
		return nil
	}
	dir := n.Config.SSHKnownHostsDir
	return func(_ context.Context, uuid string) error { return puller.RemoveKnownHosts(dir, uuid) }
}

// startMetrics serves /metrics and /healthz on api_listen for a process
// that runs no API, so Prometheus scrapes every service the same way.
func (n *Node) startMetrics(ctx context.Context) error {
	ln, err := net.Listen("tcp", n.Config.APIListen)
	if err != nil {
		return fmt.Errorf("api_listen %s (metrics): %w", n.Config.APIListen, err)
	}
	n.APIAddr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(n.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	n.goRun("metrics", func(ctx context.Context) error { return apiserver.Serve(ctx, ln, mux) }, ctx)
	return nil
}

func (n *Node) natsReady(context.Context) error {
	if !n.NC.IsConnected() {
		return errors.New("not connected")
	}
	return nil
}

// APIToken returns the admin token: SATORU_API_TOKEN, api_token_file, or
// one generated once into <data_dir>/api-token (0600) and reused.
func APIToken(cfg config.Config) (token, generatedFile string, err error) {
	if cfg.APIToken.IsSet() {
		return cfg.APIToken.Value(), "", nil
	}
	path := filepath.Join(cfg.DataDir, "api-token")
	if err := checkGenerated(path); err != nil {
		return "", "", fmt.Errorf("API token (generated, api_token_file unset): %w", err)
	}
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), path, nil
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", "", fmt.Errorf("generate API token: %w", err)
	}
	token = hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("write API token to %s: %w", path, err)
	}
	return token, path, nil
}

// goService runs a service until ctx ends, announcing it alive in the
// SATORU_SERVICES bucket (bus.Announce, as <name>.<instance_name>) while
// it runs; the entry is deleted when the service returns.
func (n *Node) goService(name string, run func(context.Context) error, ctx context.Context) {
	n.goRun(name, func(ctx context.Context) error {
		// The service is announced alive (GET /health lists it) while it runs.
		actx, stopAnnounce := context.WithCancel(ctx)
		announced := make(chan struct{})
		go func() {
			defer close(announced)
			log := n.Log.With("service", name)
			// A puller or snapshotter runs on this node's staging: its
			// entry names the node, and leaves a node record.
			node := ""
			if name == domain.ServicePuller || name == domain.ServiceSnapshotter {
				node = n.StagingID
			}
			if err := n.Infra.AnnounceNode(actx, name, n.Config.InstanceName, node, log); err != nil && actx.Err() == nil {
				log.Error("cannot announce the service alive; GET /health will miss it", "err", err)
			}
		}()
		err := run(ctx)
		stopAnnounce()
		<-announced
		return err
	}, ctx)
}

// goRun runs one part of the node; its failure stops the whole node.
func (n *Node) goRun(name string, run func(context.Context) error, ctx context.Context) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			n.Log.Error("service stopped", "service", name, "err", err)
			n.mu.Lock()
			n.errs = append(n.errs, fmt.Errorf("%s: %w", name, err))
			n.mu.Unlock()
			n.cancel() // one service down takes the node down, loudly
		}
	}()
}

// Stop asks every service to stop.
func (n *Node) Stop() { n.cancel() }

// Wait blocks until the services have stopped, then closes clients and
// embedded servers, and returns the first service error.
func (n *Node) Wait() error {
	n.wg.Wait()
	n.close()
	n.mu.Lock()
	defer n.mu.Unlock()
	return errors.Join(n.errs...)
}

func (n *Node) close() {
	if n.notify != nil {
		// The services have stopped, so no new event comes; one try's
		// worth of time for those in flight, then they are dropped.
		ctx, cancel := context.WithTimeout(context.Background(), notify.Timeout)
		n.notify.Close(ctx)
		cancel()
	}
	if n.conns != nil {
		n.conns.Close()
	}
	if n.StoreSrv != nil {
		n.StoreSrv.Close()
	}
	if n.NATS != nil {
		n.NATS.Shutdown()
	}
}
