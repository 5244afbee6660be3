// Package apicmd is satoru's client commands (sites, targets, run, jobs,
// snapshots, restore, sync, health): each parses its flags, calls the REST
// API through package client and prints a table, a detail view or the
// API's JSON (--json).
package apicmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/client"
	"github.com/satoru/satoru/shared/domain"
)

// Exit codes of the client commands.
const (
	ExitOK = 0
	// ExitFailed: an API or connection error, or a waited-for job that
	// failed or was canceled.
	ExitFailed = 1
	// ExitUsage: unknown command or flag, missing or extra argument.
	ExitUsage = 2
	// ExitWarning: a waited-for job ended with status warning (it did its
	// work only in part, e.g. one target of several failed).
	ExitWarning = 3
	// ExitTimeout: --timeout ran out while the job was still running (it
	// keeps running).
	ExitTimeout = 4
	// ExitInterrupted: Ctrl-C while waiting (the job keeps running).
	ExitInterrupted = 130
)

// ExitCode is the exit code for a finished job's status.
func ExitCode(s domain.JobStatus) int {
	switch s {
	case domain.StatusSuccess:
		return ExitOK
	case domain.StatusWarning:
		return ExitWarning
	}
	return ExitFailed
}

// Commands are the command words this package runs.
var Commands = []string{"sites", "targets", "run", "jobs", "snapshots", "restore", "sync", "check", "health", "tokens", "audit", "whoami"}

// IsCommand reports whether word is one of Commands.
func IsCommand(word string) bool { return slices.Contains(Commands, word) }

// Main runs one client command (args[0] is one of Commands) and returns
// its exit code.
func Main(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	r := &runner{
		ctx: ctx, environ: environ, stdout: stdout, stderr: stderr,
		now: time.Now, readFile: os.ReadFile,
		poll: time.Second, check: 5 * time.Second,
	}
	return r.main(args)
}

// runner holds one command's environment and, once its flags are
// parsed, its API client.
type runner struct {
	ctx            context.Context
	environ        []string
	stdout, stderr io.Writer
	now            func() time.Time
	readFile       func(string) ([]byte, error)
	hc             *http.Client // nil: a fresh one
	// poll is the GET /jobs/{id} interval when the events stream is not
	// available; check is how often a streamed job's document is read
	// too (a job failed before any worker took it publishes no event).
	poll, check time.Duration

	cmd   string // "satoru sites add", for messages
	group string // "satoru sites", for the --help hint
	flags commonFlags
	set   settings
	api   *client.Client
}

// exitError ends a command with a code; its message, if any, is
// printed to stderr.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// helpRequest: -h, --help or "help" was given; help goes to stdout.
type helpRequest struct{ help string }

func (h *helpRequest) Error() string { return "help requested" }

func (r *runner) main(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(r.stderr, Usage)
		return ExitUsage
	}
	r.cmd = "satoru " + args[0]
	r.group = r.cmd
	err := r.dispatch(args[0], args[1:])
	var (
		he  *helpRequest
		ue  *usageError
		ee  *exitError
		ae  *client.APIError
		une *client.UnreachableError
	)
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &he):
		fmt.Fprint(r.stdout, he.help)
		return ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(r.stderr, "%s\n", ue.msg)
		if ue.help == Usage {
			fmt.Fprintf(r.stderr, "see: satoru help\n")
		} else {
			fmt.Fprintf(r.stderr, "see: %s --help\n", r.group)
		}
		return ExitUsage
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintf(r.stderr, "%s: %s\n", r.cmd, ee.msg)
		}
		return ee.code
	case errors.As(err, &ae) && ae.Code == client.CodeUnauthorized:
		fmt.Fprintf(r.stderr, "%s: unauthorized: the API at %s refused the token from %s: %s\n",
			r.cmd, r.api.BaseURL(), r.set.TokenSource, clean(ae.Message))
		return ExitFailed
	case errors.As(err, &une):
		fmt.Fprintf(r.stderr, "%s: %s (is `satoru up` or `satoru api` running there? set --api-url or %s)\n",
			r.cmd, clean(err.Error()), EnvAPIURL)
		return ExitFailed
	}
	fmt.Fprintf(r.stderr, "%s: %s\n", r.cmd, clean(err.Error()))
	return ExitFailed
}

func (r *runner) dispatch(cmd string, args []string) error {
	switch cmd {
	case "sites":
		return r.sub(args, sitesHelp, map[string]func([]string) error{
			"add": r.sitesAdd, "list": r.sitesList, "show": r.sitesShow, "rm": r.sitesRm, "policy": r.sitesPolicy,
		})
	case "targets":
		return r.sub(args, targetsHelp, map[string]func([]string) error{
			"add": r.targetsAdd, "list": r.targetsList, "rm": r.targetsRm,
		})
	case "run":
		return r.runJob(args)
	case "jobs":
		return r.sub(args, jobsHelp, map[string]func([]string) error{
			"list": r.jobsList, "show": r.jobsShow, "logs": r.jobsLogs, "cancel": r.jobsCancel,
		})
	case "snapshots":
		return r.snapshots(args)
	case "restore":
		return r.restore(args)
	case "sync":
		return r.sub(args, syncHelp, map[string]func([]string) error{
			"now": r.syncNow, "status": r.syncStatus,
		})
	case "check":
		return r.sub(args, checkHelp, map[string]func([]string) error{
			"now": r.checkNow, "status": r.checkStatus,
		})
	case "health":
		return r.health(args)
	case "tokens":
		return r.sub(args, tokensHelp, map[string]func([]string) error{
			"create": r.tokensCreate, "list": r.tokensList, "revoke": r.tokensRevoke,
		})
	case "audit":
		return r.audit(args)
	case "whoami":
		return r.whoami(args)
	}
	return usagef(Usage, "satoru: unknown command %q", cmd)
}

// sub runs a subcommand of a command group.
func (r *runner) sub(args []string, help string, subs map[string]func([]string) error) error {
	names := make([]string, 0, len(subs))
	for n := range subs {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(args) == 0 {
		return usagef(help, "%s: missing subcommand (%s)", r.cmd, strings.Join(names, ", "))
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		return &helpRequest{help}
	}
	f, ok := subs[args[0]]
	if !ok {
		return usagef(help, "%s: unknown subcommand %q (want %s)", r.cmd, args[0], strings.Join(names, ", "))
	}
	r.cmd += " " + args[0]
	return f(args[1:])
}

// newFlags starts a flag set for the current command.
func (r *runner) newFlags() *flag.FlagSet { return newFlags(r.cmd, &r.flags) }

// connect resolves the API address and token and builds the client.
func (r *runner) connect() error {
	set, err := resolveSettings(r.flags.apiURL, r.flags.tokenFile, r.environ, r.readFile)
	if err != nil {
		return err
	}
	api, err := client.New(set.APIURL, set.Token, r.hc)
	if err != nil {
		return &usageError{msg: fmt.Sprintf("%s: %v", r.cmd, err)}
	}
	r.set, r.api = set, api
	return nil
}

// out is where progress lines go: stdout, or stderr when stdout carries
// JSON.
func (r *runner) progress() io.Writer {
	if r.flags.json {
		return r.stderr
	}
	return r.stdout
}

// connectArgs parses a command's flags and its positionals (names, as
// for parse), then connects.
func (r *runner) connectArgs(fs *flag.FlagSet, help string, args []string, names ...string) ([]string, error) {
	pos, err := parse(fs, help, args, names...)
	if err != nil {
		return nil, err
	}
	if err := r.connect(); err != nil {
		return nil, err
	}
	return pos, nil
}

// siteArgs is connectArgs for a command whose first positional is SITE,
// followed by the positionals named in more; it resolves the site and
// returns it with the other positionals.
func (r *runner) siteArgs(fs *flag.FlagSet, help string, args []string, more ...string) (domain.SiteView, []string, error) {
	pos, err := parse(fs, help, args, append([]string{"SITE"}, more...)...)
	if err != nil {
		return domain.SiteView{}, nil, err
	}
	sv, err := r.connectSite(pos[0])
	return sv, pos[1:], err
}

// connectSite connects and resolves a site's name or uuid through GET
// /sites (for commands that check their flags between parsing and
// connecting).
func (r *runner) connectSite(ref string) (domain.SiteView, error) {
	if err := r.connect(); err != nil {
		return domain.SiteView{}, err
	}
	list, err := r.api.ListSites(r.ctx)
	if err != nil {
		return domain.SiteView{}, fmt.Errorf("list sites: %w", err)
	}
	return resolveSite(list.Sites, ref)
}
