package apicmd

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// usageError is a bad command line: exit 2 with the message (which
// names the command) and a pointer to the command's --help.
type usageError struct {
	msg  string
	help string // the command's usage, for --help
}

func (e *usageError) Error() string { return e.msg }

func usagef(help, format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), help: help}
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// commonFlags are accepted by every client command.
type commonFlags struct {
	apiURL    string
	tokenFile string
	json      bool
}

// newFlags returns a flag set for one command with the common flags.
// Errors are returned, not printed: parse prints them with the usage.
func newFlags(name string, c *commonFlags) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.apiURL, "api-url", "", "API address (default $"+EnvAPIURL+" or "+DefaultAPIURL+")")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the API token")
	fs.BoolVar(&c.json, "json", false, "print the API's JSON")
	return fs
}

// parse parses flags and positional arguments in any order ("sites add
// NAME --host H" and "sites add --host H NAME" both work); after "--"
// everything is positional. Exactly len(names) positionals must be given;
// names (SITE, JOB, ...) are for the error messages.
func parse(fs *flag.FlagSet, help string, args []string, names ...string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &helpRequest{help}
			}
			return nil, usagef(help, "%s: %v", fs.Name(), err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	switch {
	case len(pos) < len(names):
		return nil, usagef(help, "%s: missing %s", fs.Name(), strings.Join(names[len(pos):], " and "))
	case len(pos) > len(names):
		return nil, usagef(help, "%s: unexpected argument %q", fs.Name(), pos[len(names)])
	}
	return pos, nil
}
