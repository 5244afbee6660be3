package apiserver

import (
	"context"

	"github.com/labstack/echo/v4"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
)

type echoContext = echo.Context

type oneSiteStore struct {
	Store
	job domain.Job
}

func (s *oneSiteStore) GetSite(_ context.Context, uuid string) (domain.Site, error) {
	return domain.Site{UUID: uuid, Name: "a", Host: "h", Port: 22, User: "u"}, nil
}

func (s *oneSiteStore) InsertJob(_ context.Context, j domain.Job) error {
	s.job = j
	return nil
}

type recordDispatcher struct{ got *events.JobRequest }

func (d recordDispatcher) Publish(_ context.Context, r events.JobRequest) error {
	*d.got = r
	return nil
}
func (d recordDispatcher) RequestCancel(context.Context, string) error { return nil }
