module github.com/satoru/satoru/services/scheduler

go 1.26

require (
	github.com/google/uuid v1.6.0
	github.com/nats-io/nats.go v1.47.0
	github.com/prometheus/client_golang v1.23.2
	github.com/satoru/satoru/shared v0.0.0
)

replace github.com/satoru/satoru/shared => ../../shared
