// Package testkit starts the real parts Satoru's integration tests run
// against: sshd edge hosts on random loopback ports, each with its own host
// key, client key and authorized_keys, which a test can crash and restart
// on the same port, or placed on another address under a command prefix
// such as `ip netns exec` (StartEdgeHostWith) (sshd.go); an S3 stand-in (s3.go); a TCP proxy that delays
// connections so jobs take measurable time (proxy.go); and the service
// stack (stack.go).
//
// Nothing here skips: a missing tool or a non-root run fails the test with
// a message that says what to install or how to run, because CI must never
// pass by skipping.
package testkit
