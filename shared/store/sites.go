package store

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/satoru/satoru/shared/domain"
)

func normSite(s domain.Site) domain.Site {
	s.CreatedAt = ts(s.CreatedAt)
	s.UpdatedAt = ts(s.UpdatedAt)
	return s
}

// CreateSite stores a new site. A site whose id or name is taken is
// ErrConflict.
func (s *Store) CreateSite(ctx context.Context, site domain.Site) error {
	if site.UUID == "" {
		return errors.New("store: create site: empty site_uuid")
	}
	_, err := s.sites.InsertOne(ctx, normSite(site))
	if isConflict(err) {
		// Say which one: the error does not name the index. This read
		// runs only on the rare conflict path.
		what := fmt.Sprintf("name %q is taken", site.Name)
		if s.sites.FindOne(ctx, byID(site.UUID)).Err() == nil {
			what = fmt.Sprintf("id %s exists", site.UUID)
		}
		return fmt.Errorf("store: create site %q: %s: %w", site.Name, what, ErrConflict)
	}
	return wrap(fmt.Sprintf("create site %q", site.Name), err)
}

// GetSite reads a site; ErrNotFound if there is none.
func (s *Store) GetSite(ctx context.Context, uuid string) (domain.Site, error) {
	var site domain.Site
	err := s.sites.FindOne(ctx, byID(uuid)).Decode(&site)
	if err != nil {
		return domain.Site{}, wrap("get site "+uuid, err)
	}
	return site, nil
}

// ListSites returns every site, sorted by name.
func (s *Store) ListSites(ctx context.Context) ([]domain.Site, error) {
	cur, err := s.sites.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "name", Value: 1}}))
	if err != nil {
		return nil, wrap("list sites", err)
	}
	out := []domain.Site{}
	if err := cur.All(ctx, &out); err != nil {
		return nil, wrap("list sites", err)
	}
	return out, nil
}

// ReplaceSite overwrites a site's document. ErrNotFound if it does not
// exist, ErrConflict if its new name is another site's.
func (s *Store) ReplaceSite(ctx context.Context, site domain.Site) error {
	res, err := s.sites.ReplaceOne(ctx, byID(site.UUID), normSite(site))
	if isConflict(err) {
		return fmt.Errorf("store: replace site %s: name %q is taken: %w", site.UUID, site.Name, ErrConflict)
	}
	if err != nil {
		return wrap("replace site "+site.UUID, err)
	}
	if res.MatchedCount == 0 {
		return fmt.Errorf("store: replace site %s: %w", site.UUID, ErrNotFound)
	}
	return nil
}

// DeleteSite removes a site with its targets and its status. The targets
// and status are removed even when the site document is already gone (a
// retry after a partial failure), and ErrNotFound is returned then.
func (s *Store) DeleteSite(ctx context.Context, uuid string) error {
	res, err := s.sites.DeleteOne(ctx, byID(uuid))
	if err != nil {
		return wrap("delete site "+uuid, err)
	}
	if _, err := s.targets.DeleteMany(ctx, bson.D{{Key: "site_uuid", Value: uuid}}); err != nil {
		return wrap("delete site "+uuid+": targets", err)
	}
	if _, err := s.siteStatus.DeleteOne(ctx, byID(uuid)); err != nil {
		return wrap("delete site "+uuid+": status", err)
	}
	if res.DeletedCount == 0 {
		return fmt.Errorf("store: delete site %s: %w", uuid, ErrNotFound)
	}
	return nil
}

func normStatus(st domain.SiteStatus) domain.SiteStatus {
	st.Health.UpdatedAt = ts(st.Health.UpdatedAt)
	st.LastPreflightAt = tsp(st.LastPreflightAt)
	st.LastScanAt = tsp(st.LastScanAt)
	st.LastSuccessAt = tsp(st.LastSuccessAt)
	return st
}

// GetSiteStatus reads a site's status. A site no worker has touched yet
// has status "unknown"; that is not an error.
func (s *Store) GetSiteStatus(ctx context.Context, uuid string) (domain.SiteStatus, error) {
	var st domain.SiteStatus
	err := s.siteStatus.FindOne(ctx, byID(uuid)).Decode(&st)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return domain.SiteStatus{SiteUUID: uuid, Health: domain.HealthState{Status: domain.HealthUnknown}}, nil
	}
	if err != nil {
		return domain.SiteStatus{}, wrap("get site status "+uuid, err)
	}
	return st, nil
}

// ListSiteStatuses returns every stored status keyed by site_uuid. Sites
// without a status are absent from the map.
func (s *Store) ListSiteStatuses(ctx context.Context) (map[string]domain.SiteStatus, error) {
	cur, err := s.siteStatus.Find(ctx, bson.D{})
	if err != nil {
		return nil, wrap("list site statuses", err)
	}
	var all []domain.SiteStatus
	if err := cur.All(ctx, &all); err != nil {
		return nil, wrap("list site statuses", err)
	}
	out := make(map[string]domain.SiteStatus, len(all))
	for _, st := range all {
		out[st.SiteUUID] = st
	}
	return out, nil
}

// PutSiteStatus writes a site's whole status (insert or replace). Only the
// worker holding the site lease calls it.
func (s *Store) PutSiteStatus(ctx context.Context, st domain.SiteStatus) error {
	if st.SiteUUID == "" {
		return errors.New("store: put site status: empty site_uuid")
	}
	_, err := s.siteStatus.ReplaceOne(ctx, byID(st.SiteUUID), normStatus(st), options.Replace().SetUpsert(true))
	return wrap("put site status "+st.SiteUUID, err)
}
