package remote

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// base is the part of every argv that does not depend on the config.
func base(knownHosts string) []string {
	return []string{
		"-F", "/dev/null",
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "UpdateHostKeys=no",
	}
}

func join(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func keepalive(timeout string) []string {
	return []string{
		"-o", "ConnectTimeout=" + timeout,
		"-o", "ServerAliveInterval=15",
		"-o", "ServerAliveCountMax=4",
		"-o", "PasswordAuthentication=no",
		"-o", "KbdInteractiveAuthentication=no",
	}
}

func TestSSHArgs(t *testing.T) {
	const kh = "/var/lib/satoru/kh/site.known_hosts"
	tests := []struct {
		name    string
		cfg     SSHConfig
		cmd     string
		want    []string
		wantErr string
	}{
		{
			name: "full config",
			cfg: SSHConfig{Host: "edge1.example", Port: 2222, User: "backup", KeyPath: "/keys/id_ed25519",
				KnownHostsFile: kh, HostKeyAlias: "satoru-abc", ConnectTimeout: 5 * time.Second},
			cmd: "echo hi",
			want: join(base(kh), []string{"-o", "HostKeyAlias=satoru-abc"}, keepalive("5"),
				[]string{"-o", "IdentitiesOnly=yes", "-i", "/keys/id_ed25519", "-p", "2222", "-l", "backup", "--", "edge1.example", "echo hi"}),
		},
		{
			name: "defaults: port 22, 10s timeout, no key, no alias",
			cfg:  SSHConfig{Host: "10.0.0.5", User: "root", KnownHostsFile: kh},
			cmd:  "true",
			want: join(base(kh), keepalive("10"), []string{"-p", "22", "-l", "root", "--", "10.0.0.5", "true"}),
		},
		{
			name: "IPv6 host",
			cfg:  SSHConfig{Host: "::1", Port: 22, User: "u", KnownHostsFile: kh},
			cmd:  "true",
			want: join(base(kh), keepalive("10"), []string{"-p", "22", "-l", "u", "--", "::1", "true"}),
		},
		{
			name: "bracketed IPv6 host is unwrapped",
			cfg:  SSHConfig{Host: "[fe80::1%eth0]", User: "u", KnownHostsFile: kh},
			cmd:  "true",
			want: join(base(kh), keepalive("10"), []string{"-p", "22", "-l", "u", "--", "fe80::1%eth0", "true"}),
		},
		{
			name: "sub-second timeout rounds up",
			cfg:  SSHConfig{Host: "h", User: "u", KnownHostsFile: kh, ConnectTimeout: 1500 * time.Millisecond},
			cmd:  "true",
			want: join(base(kh), keepalive("2"), []string{"-p", "22", "-l", "u", "--", "h", "true"}),
		},
		{
			name: "control master",
			cfg:  SSHConfig{Host: "h", User: "u", KnownHostsFile: kh, ControlPath: "/run/satoru/cm/%C", ControlPersist: 90 * time.Second},
			cmd:  "true",
			want: join(base(kh), keepalive("10"), []string{
				"-o", "ControlMaster=auto", "-o", "ControlPath=/run/satoru/cm/%C", "-o", "ControlPersist=90",
				"-p", "22", "-l", "u", "--", "h", "true"}),
		},
		{
			name: "control persist default",
			cfg:  SSHConfig{Host: "h", User: "u", KnownHostsFile: kh, ControlPath: "/cm/s"},
			cmd:  "true",
			want: join(base(kh), keepalive("10"), []string{
				"-o", "ControlMaster=auto", "-o", "ControlPath=/cm/s", "-o", "ControlPersist=60",
				"-p", "22", "-l", "u", "--", "h", "true"}),
		},
		{
			name: "remote command is one argument, even when it starts with a dash",
			cfg:  SSHConfig{Host: "h", User: "u", KnownHostsFile: kh},
			cmd:  "-oProxyCommand=evil 'a b'",
			want: join(base(kh), keepalive("10"), []string{"-p", "22", "-l", "u", "--", "h", "-oProxyCommand=evil 'a b'"}),
		},
		{name: "host starting with dash", cfg: SSHConfig{Host: "-oProxyCommand=x", User: "u", KnownHostsFile: kh}, cmd: "true", wantErr: "starts with '-'"},
		{name: "missing host", cfg: SSHConfig{User: "u", KnownHostsFile: kh}, cmd: "true", wantErr: "host is required"},
		{name: "user in host", cfg: SSHConfig{Host: "root@h", User: "u", KnownHostsFile: kh}, cmd: "true", wantErr: "'@'"},
		{name: "host with port", cfg: SSHConfig{Host: "h:2222", User: "u", KnownHostsFile: kh}, cmd: "true", wantErr: "a port belongs in Port"},
		{name: "host with space", cfg: SSHConfig{Host: "h x", User: "u", KnownHostsFile: kh}, cmd: "true", wantErr: "whitespace"},
		{name: "missing user", cfg: SSHConfig{Host: "h", KnownHostsFile: kh}, cmd: "true", wantErr: "user is required"},
		{name: "user starting with dash", cfg: SSHConfig{Host: "h", User: "-x", KnownHostsFile: kh}, cmd: "true", wantErr: "starts with '-'"},
		{name: "negative port", cfg: SSHConfig{Host: "h", User: "u", Port: -1, KnownHostsFile: kh}, cmd: "true", wantErr: "port -1 out of range"},
		{name: "port too large", cfg: SSHConfig{Host: "h", User: "u", Port: 65536, KnownHostsFile: kh}, cmd: "true", wantErr: "port 65536 out of range"},
		{name: "no known_hosts", cfg: SSHConfig{Host: "h", User: "u"}, cmd: "true", wantErr: "known_hosts file is required"},
		{name: "known_hosts with space", cfg: SSHConfig{Host: "h", User: "u", KnownHostsFile: "/my data/kh"}, cmd: "true", wantErr: "whitespace"},
		{name: "key path with quote", cfg: SSHConfig{Host: "h", User: "u", KnownHostsFile: kh, KeyPath: "/k'ey"}, cmd: "true", wantErr: "quote"},
		{name: "key path with percent", cfg: SSHConfig{Host: "h", User: "u", KnownHostsFile: kh, KeyPath: "/k%d"}, cmd: "true", wantErr: "'%'"},
		{name: "alias with space", cfg: SSHConfig{Host: "h", User: "u", KnownHostsFile: kh, HostKeyAlias: "a b"}, cmd: "true", wantErr: "whitespace"},
		{name: "control path too long", cfg: SSHConfig{Host: "h", User: "u", KnownHostsFile: kh, ControlPath: "/" + strings.Repeat("c", 100)}, cmd: "true", wantErr: "unix socket"},
		{name: "empty command", cfg: SSHConfig{Host: "h", User: "u", KnownHostsFile: kh}, cmd: "", wantErr: "empty remote command"},
		{name: "NUL in command", cfg: SSHConfig{Host: "h", User: "u", KnownHostsFile: kh}, cmd: "a\x00b", wantErr: "NUL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SSHArgs(tc.cfg, tc.cmd)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("err = %v, want ErrInvalidConfig containing %q", err, tc.wantErr)
				}
				if !IsPermanent(err) {
					t.Errorf("config error is not permanent")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("SSHArgs:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestSSHCommandForRsync(t *testing.T) {
	tests := []struct {
		name    string
		cfg     SSHConfig
		want    string
		wantErr string
	}{
		{
			name: "options without host or command",
			cfg:  SSHConfig{Host: "h", Port: 2222, User: "backup", KeyPath: "/k/id", KnownHostsFile: "/kh/s", HostKeyAlias: "satoru-s"},
			want: "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/kh/s" +
				" -o GlobalKnownHostsFile=/dev/null -o UpdateHostKeys=no -o HostKeyAlias=satoru-s -o ConnectTimeout=10" +
				" -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -o PasswordAuthentication=no" +
				" -o KbdInteractiveAuthentication=no -o IdentitiesOnly=yes -i /k/id -p 2222 -l backup",
		},
		{
			name: "control path is carried",
			cfg:  SSHConfig{Host: "h", User: "u", KnownHostsFile: "/kh", ControlPath: "/cm/%C"},
			want: "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/kh" +
				" -o GlobalKnownHostsFile=/dev/null -o UpdateHostKeys=no -o ConnectTimeout=10" +
				" -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -o PasswordAuthentication=no" +
				" -o KbdInteractiveAuthentication=no -o ControlMaster=auto -o ControlPath=/cm/%C -o ControlPersist=60 -p 22 -l u",
		},
		{name: "known_hosts path with spaces", cfg: SSHConfig{Host: "h", User: "u", KnownHostsFile: "/my kh/s"}, wantErr: "whitespace"},
		{name: "key path with tab", cfg: SSHConfig{Host: "h", User: "u", KnownHostsFile: "/kh", KeyPath: "/k\tx"}, wantErr: "whitespace"},
		{name: "key path with double quote", cfg: SSHConfig{Host: "h", User: "u", KnownHostsFile: "/kh", KeyPath: `/k"x`}, wantErr: "quote"},
		{name: "control path with backslash", cfg: SSHConfig{Host: "h", User: "u", KnownHostsFile: "/kh", ControlPath: `/c\x`}, wantErr: "backslash"},
		{name: "host starting with dash", cfg: SSHConfig{Host: "-h", User: "u", KnownHostsFile: "/kh"}, wantErr: "starts with '-'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SSHCommandForRsync(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got\n %s\nwant\n %s", got, tc.want)
			}
		})
	}
}

func TestSSHControlArgs(t *testing.T) {
	cfg := SSHConfig{Host: "h", User: "u", KnownHostsFile: "/kh", ControlPath: "/cm/s"}
	got, err := SSHControlArgs(cfg, "exit")
	if err != nil {
		t.Fatal(err)
	}
	if tail := got[len(got)-4:]; !slices.Equal(tail, []string{"-O", "exit", "--", "h"}) {
		t.Errorf("tail = %q", tail)
	}
	if !slices.Contains(got, "ControlPath=/cm/s") {
		t.Errorf("no ControlPath in %q", got)
	}
	for _, bad := range []struct {
		cfg SSHConfig
		op  string
	}{{cfg, "stop"}, {SSHConfig{Host: "h", User: "u", KnownHostsFile: "/kh"}, "exit"}} {
		if _, err := SSHControlArgs(bad.cfg, bad.op); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("SSHControlArgs(%+v, %q) = %v, want ErrInvalidConfig", bad.cfg, bad.op, err)
		}
	}
}

func TestSSHCmd(t *testing.T) {
	c, err := SSHCmd(SSHConfig{Host: "h", User: "u", KnownHostsFile: "/kh"}, "preflight", "true")
	if err != nil {
		t.Fatal(err)
	}
	if c.Path != "ssh" || c.Step != "preflight" || c.Args[len(c.Args)-1] != "true" {
		t.Errorf("SSHCmd = %+v", c)
	}
}
