module github.com/satoru/satoru/cmd/satoru

go 1.26

require (
	github.com/chromedp/cdproto v0.159.0
	github.com/chromedp/chromedp v0.23.0
	github.com/satoru/satoru/services/api v0.0.0
	github.com/satoru/satoru/services/puller v0.0.0
	github.com/satoru/satoru/services/scheduler v0.0.0
	github.com/satoru/satoru/services/snapshotter v0.0.0
	github.com/satoru/satoru/services/syncer v0.0.0
	github.com/satoru/satoru/shared v0.0.0
	golang.org/x/sys v0.37.0
)

require github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect

replace (
	github.com/satoru/satoru/services/api => ../../services/api
	github.com/satoru/satoru/services/puller => ../../services/puller
	github.com/satoru/satoru/services/scheduler => ../../services/scheduler
	github.com/satoru/satoru/services/snapshotter => ../../services/snapshotter
	github.com/satoru/satoru/services/syncer => ../../services/syncer
	github.com/satoru/satoru/shared => ../../shared
)
