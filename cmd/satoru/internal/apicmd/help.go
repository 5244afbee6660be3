package apicmd

// Usage texts. Keep docs/cli.md in step.

const commonHelp = `common flags (any client command):
  --api-url URL      API address (default $SATORU_API_URL, else http://127.0.0.1:8080)
  --token-file FILE  file holding the API token (default $SATORU_API_TOKEN, else
                     the file in $SATORU_API_TOKEN_FILE, else <data_dir>/api-token
                     with data_dir from $SATORU_DATA_DIR or ./data); there is no
                     flag for the token itself: argv is visible in ps
  --json             print the API's JSON instead of tables
exit codes: 0 ok, 1 error or failed/canceled job, 2 usage, 3 job ended with
warning, 4 --timeout ran out while waiting, 130 interrupted while waiting
`

// Usage lists the client commands (shown by satoru's own usage too).
const Usage = `client commands (talk to the REST API; satoru <command> --help for more):
  sites add|list|show|rm        register, list, show, remove sites
  sites policy <site> [...]     pause/resume, own schedule, retention, windows
  targets add|list|rm <site>    a site's directories and SQLite databases
  run <site> preflight|backup|retention|verify [--wait] [--timeout D] [--force]
  jobs list|show|logs|cancel    jobs and their step events (logs --follow is live)
  snapshots <site>              a site's restic snapshots
  snapshots diff <id> <against> what changed from snapshot <against> to <id>
  restore <site> --snapshot ID --path P (--to-local DIR | --to-site DIR)
  sync now|status               offsite copy
  check now|status              repository check (restic check)
  health                        aggregate health; exits 1 when degraded
  tokens create|list|revoke     scoped API tokens (viewer, operator, admin)
  audit [--token T] [--action A] [--site S] [--since T]   the audit trail
  whoami                        the name and role of the token in use
  <site> is a site's name or uuid.
`

const sitesHelp = `usage:
  satoru sites add NAME --host HOST --user USER [--port 22] [--ssh-key PATH]
        [--host-key "TYPE BASE64" | --trust-on-first-use] [--bwlimit KIB_PER_S]
        [--dir PATH ...] [--sqlite PATH ...] [--exclude PATTERN ...]
      --exclude applies to every --dir of the command
  satoru sites list
  satoru sites show <site>
  satoru sites rm <site>        (its snapshots stay in the repository)
  satoru sites policy <site> [--pause|--resume] [--every D|--cron EXPR [--tz Z]]
        [--keep-last N ...] [--window "..."]   (see satoru sites policy --help)

` + commonHelp

const targetsHelp = `usage:
  satoru targets add <site> (--dir PATH [--exclude PATTERN ...] | --sqlite PATH)
  satoru targets list <site>
  satoru targets rm <site> <target_hash>

` + commonHelp

const runHelp = `usage:
  satoru run <site> preflight|backup|retention|verify [--wait] [--timeout D] [--force]
      --force     start it even inside one of the site's maintenance windows
                  (refused there otherwise); a paused site's jobs run anyway
                  and are marked as started by hand
      --wait      follow the job's events until it ends; the exit code is the
                  job's (0 success, 3 warning, 1 failed or canceled)
      --timeout D stop waiting after D (e.g. 30m); exit 4, the job goes on

` + commonHelp

const jobsHelp = `usage:
  satoru jobs list [--site <site>] [--type T] [--status S] [--limit N]
  satoru jobs show <job>             the job and its events
  satoru jobs logs <job> [--follow]  its events; --follow streams them live until
                                     the job ends and exits with its code
  satoru jobs cancel <job>

` + commonHelp

const snapshotsHelp = `usage:
  satoru snapshots <site>
  satoru snapshots diff <id> <against>   added (+), removed (-) and changed (M)
                                         paths from snapshot <against> to <id>
      a site named "diff" is given by its uuid

` + commonHelp

const restoreHelp = `usage:
  satoru restore <site> --snapshot ID --path P [--path P ...]
        (--to-local DIR | --to-site DIR) [--overwrite] [--dry-run]
        [--wait] [--timeout D]
      --path      a path inside the snapshot: <root>/<target_hash>[/...], root as
                  printed by satoru snapshots <site>
      --to-local  a folder on the Satoru host; --to-site a folder on the edge host
      --overwrite restore into a folder that is not empty (never deletes)
      --dry-run   only report what would change

` + commonHelp

const syncHelp = `usage:
  satoru sync now [--wait] [--timeout D]   queue an offsite copy now
  satoru sync status

` + commonHelp

const checkHelp = `usage:
  satoru check now [--wait] [--timeout D]   queue a repository check now (restic
                                            check of the local repository and the
                                            offsite one when configured)
  satoru check status                       the last check, per repository

` + commonHelp

const healthHelp = `usage:
  satoru health      exit 0 when the status is ok, 1 when degraded (or on error)

` + commonHelp
