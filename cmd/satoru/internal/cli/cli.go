// Package cli parses satoru's command line and runs the chosen command.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/satoru/satoru/cmd/satoru/internal/apicmd"
	"github.com/satoru/satoru/cmd/satoru/internal/node"
	"github.com/satoru/satoru/shared/config"
	"github.com/satoru/satoru/shared/conns"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/observe"
	"github.com/satoru/satoru/shared/restic"
)

const usage = `usage: satoru <command> [flags]

commands:
  up        run every service in this process; with no nats_url and no
            mongo_uri it starts an embedded NATS server and store under data_dir
  control   run the control plane only, like up (embedded NATS and store,
            API, scheduler, syncer) but with no puller or snapshotter: the
            backups run on the worker nodes joined to it
  worker    run a worker node against external NATS and MongoDB: a puller
            and a snapshotter over one local staging_root; a backup's
            snapshot is taken in this process, right after its pull
  puller    run the puller against external NATS and MongoDB
  snapshotter
            run the snapshotter against external NATS and MongoDB; it only
            snapshots pulls made on its own staging_root (prefer worker)
  api       run the REST API against external NATS and MongoDB
  syncer    run the offsite syncer against external NATS and MongoDB
  scheduler run the scheduler against external NATS and MongoDB (several
            may run: one leads)
  version   print the version

flags (up, worker and the other service commands):
  --config FILE     YAML config file (default $SATORU_CONFIG)
  --nats-url URL    NATS to use (overrides nats_url)
  --mongo-uri URI   MongoDB to use (overrides mongo_uri); argv is visible to
                    every local user: give URLs with credentials by
                    nats_url_file / mongo_uri_file instead

` + apicmd.Usage

// Main runs one satoru command and returns its exit code.
func Main(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	if apicmd.IsCommand(cmd) {
		return apicmd.Main(ctx, args, environ, stdout, stderr)
	}
	var roles node.Roles
	switch cmd {
	case "up":
		roles = node.All
	case "control":
		roles = node.Control
	case "worker":
		roles = node.Worker
	case domain.ServicePuller:
		roles = node.Roles{Puller: true}
	case domain.ServiceAPI:
		roles = node.Roles{API: true}
	case domain.ServiceSnapshotter:
		roles = node.Roles{Snapshotter: true}
	case domain.ServiceSyncer:
		roles = node.Roles{Syncer: true}
	case domain.ServiceScheduler:
		roles = node.Roles{Scheduler: true}
	case "version", "--version":
		fmt.Fprintln(stdout, "satoru", observe.Version())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "satoru: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	fs := flag.NewFlagSet("satoru "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", lookup(environ, "SATORU_CONFIG"), "YAML config file")
	natsURL := fs.String("nats-url", "", "NATS URL (overrides nats_url)")
	mongoURI := fs.String("mongo-uri", "", "MongoDB URI (overrides mongo_uri)")
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	cfg, err := config.Load(*configPath, environ)
	if err != nil {
		fmt.Fprintf(stderr, "satoru: %v\n", err)
		return 2
	}
	if *natsURL != "" {
		cfg.NATSURL = *natsURL
	}
	if *mongoURI != "" {
		cfg.MongoURI = *mongoURI
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "satoru: %v\n", err)
		return 2
	}
	if cmd != "up" && cmd != "control" && (cfg.NATSURL == "" || cfg.MongoURI == "") {
		fmt.Fprintf(stderr, "satoru %s: needs nats_url and mongo_uri (or nats_url_file and mongo_uri_file, or --nats-url and --mongo-uri); `satoru up` with embedded_nats_listen and embedded_store_listen writes join files for its embedded servers\n", cmd)
		return 2
	}
	// A control plane nobody can join runs no backup at all.
	if cmd == "control" && ((cfg.NATSURL == "" && cfg.EmbeddedNATSListen == "") || (cfg.MongoURI == "" && cfg.EmbeddedStoreListen == "")) {
		fmt.Fprintf(stderr, "satoru control: runs no backup itself, so worker nodes must be able to join it: set embedded_nats_listen and embedded_store_listen (or nats_url and mongo_uri)\n")
		return 2
	}
	log, err := observe.NewLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintf(stderr, "satoru: %v\n", err)
		return 2
	}
	log = log.With("instance", cfg.InstanceName)
	n, err := node.Start(ctx, cfg, roles, log)
	if err != nil {
		fmt.Fprintf(stderr, "satoru %s: %v\n", cmd, err)
		return 1
	}
	fmt.Fprint(stdout, Banner(cmd, n))
	err = n.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "satoru %s: %v\n", cmd, err)
		return 1
	}
	fmt.Fprintf(stdout, "satoru %s: stopped\n", cmd)
	return 0
}

// Banner tells the operator where everything is.
func Banner(cmd string, n *node.Node) string {
	var b strings.Builder
	fmt.Fprintf(&b, "satoru %s %s is running (instance %s)\n", cmd, observe.Version(), n.Config.InstanceName)
	if n.APIAddr != "" {
		fmt.Fprintf(&b, "  API:    http://%s\n", n.APIAddr)
		switch {
		case n.TokenFile != "":
			fmt.Fprintf(&b, "  token:  in %s (send it as Authorization: Bearer <token>)\n", n.TokenFile)
		default:
			b.WriteString("  token:  from SATORU_API_TOKEN / api_token_file\n")
		}
	}
	switch {
	case n.NATS == nil:
		fmt.Fprintf(&b, "  NATS:   %s\n", n.Config.RedactedNATSURL())
	case n.NATSURL == "":
		b.WriteString("  NATS:   embedded, in-process only (no listener)\n")
	default:
		fmt.Fprintf(&b, "  NATS:   embedded, %s (password required)\n", n.NATSURL)
	}
	switch {
	case n.StoreSrv == nil:
		fmt.Fprintf(&b, "  store:  %s\n", conns.RedactURI(n.StoreURI))
	case n.StoreSrv.Addr() == "":
		fmt.Fprintf(&b, "  store:  embedded (FerretDB + SQLite), socket %s only\n", n.StoreSrv.Socket())
	default:
		fmt.Fprintf(&b, "  store:  embedded (FerretDB + SQLite), socket %s and TLS on %s (client certificate required)\n", n.StoreSrv.Socket(), n.StoreSrv.Addr())
	}
	if n.NATS != nil || n.StoreSrv != nil {
		b.WriteString(JoinHelp(n))
	}
	fmt.Fprintf(&b, "  data:   %s\n", n.Config.DataDir)
	if n.StagingID != "" {
		fmt.Fprintf(&b, "  staging: %s (id %s)\n", n.Config.StagingRoot, n.StagingID)
	}
	if n.Roles.Snapshotter {
		fmt.Fprintf(&b, "  restic: %s", restic.RedactLocation(n.Config.ResticRepoPath))
		if _, local := restic.LocalPath(n.Config.ResticRepoPath); !local {
			b.WriteString(" (remote: shared by every worker)")
		}
		if !n.Config.ResticPassword.IsSet() {
			fmt.Fprintf(&b, " (password in %s: keep a copy elsewhere, the backups are lost without it)", node.ResticPasswordFile(n.Config))
		}
		b.WriteString("\n")
	}
	if n.Roles.Syncer {
		if n.Config.ResticB2Repository == "" {
			b.WriteString("  offsite: not configured (restic_b2_repository)\n")
		} else {
			fmt.Fprintf(&b, "  offsite: %s every %s\n", restic.RedactLocation(n.Config.ResticB2Repository), n.Config.ResticSyncInterval)
		}
	}
	b.WriteString("Stop with Ctrl-C (SIGINT) or SIGTERM.\n")
	return b.String()
}

// JoinHelp tells how extra workers join the embedded servers: with both
// listeners on, from the join files (credentials never in argv).
func JoinHelp(n *node.Node) string {
	natsOn := n.NATS == nil || n.NATSURL != ""
	storeOn := n.StoreSrv == nil || n.StoreSrv.Addr() != ""
	if !natsOn || !storeOn {
		return "  extra workers: none can join; set embedded_nats_listen and embedded_store_listen to let them (credentials are generated)\n"
	}
	dir := node.JoinDir(n.Config)
	var env []string
	if n.NATS != nil {
		env = append(env, "SATORU_NATS_URL_FILE="+filepath.Join(dir, "nats-url"))
	}
	if n.StoreSrv != nil {
		env = append(env, "SATORU_MONGO_URI_FILE="+filepath.Join(dir, "mongo-uri"))
	}
	return fmt.Sprintf("  extra workers: copy %s (it holds credentials: keep it 0700, files 0600) to the worker host, then\n"+
		"      %s satoru worker\n", dir, strings.Join(env, " "))
}

func lookup(environ []string, key string) string {
	for i := len(environ) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(environ[i], key+"="); ok {
			return v
		}
	}
	return ""
}
