module github.com/satoru/satoru/cmd/satoru

go 1.26

require github.com/satoru/satoru/shared v0.0.0

replace github.com/satoru/satoru/shared => ../../shared
