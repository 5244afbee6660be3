// Package compose holds the tests of the docker compose deployment in this
// folder (compose.yaml, Dockerfile, nats/, prometheus/, grafana/): they
// load the files as docker compose, NATS and Prometheus would and check
// that the pieces fit together.
package compose
