package store

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/satoru/satoru/shared/domain"
)

func normScan(sc domain.Scan) domain.Scan {
	sc.At = ts(sc.At)
	return sc
}

// AddTarget stores a new target of a site; its _id is
// domain.TargetID(site_uuid, target_hash). ErrConflict if the site has it.
func (s *Store) AddTarget(ctx context.Context, t domain.Target) error {
	if t.SiteUUID == "" || t.TargetHash == "" {
		return errors.New("store: add target: empty site_uuid or target_hash")
	}
	t.ID = domain.TargetID(t.SiteUUID, t.TargetHash)
	t.CreatedAt = ts(t.CreatedAt)
	if t.LastScan != nil {
		sc := normScan(*t.LastScan)
		t.LastScan = &sc
	}
	_, err := s.targets.InsertOne(ctx, t)
	if isConflict(err) {
		return fmt.Errorf("store: add target %s %s to site %s: already exists: %w", t.Mode, t.Path, t.SiteUUID, ErrConflict)
	}
	return wrap(fmt.Sprintf("add target %s to site %s", t.Path, t.SiteUUID), err)
}

// ListTargets returns a site's targets sorted by path ([] when none).
func (s *Store) ListTargets(ctx context.Context, siteUUID string) ([]domain.Target, error) {
	cur, err := s.targets.Find(ctx, bson.D{{Key: "site_uuid", Value: siteUUID}},
		options.Find().SetSort(bson.D{{Key: "path", Value: 1}, {Key: "_id", Value: 1}}))
	if err != nil {
		return nil, wrap("list targets of site "+siteUUID, err)
	}
	out := []domain.Target{}
	if err := cur.All(ctx, &out); err != nil {
		return nil, wrap("list targets of site "+siteUUID, err)
	}
	return out, nil
}

// DeleteTarget removes a target; ErrNotFound if the site has no such target.
func (s *Store) DeleteTarget(ctx context.Context, siteUUID, hash string) error {
	id := domain.TargetID(siteUUID, hash)
	res, err := s.targets.DeleteOne(ctx, byID(id))
	if err != nil {
		return wrap("delete target "+id, err)
	}
	if res.DeletedCount == 0 {
		return fmt.Errorf("store: delete target %s: %w", id, ErrNotFound)
	}
	return nil
}

// SetTargetScan records the outcome of a target's last pull; ErrNotFound
// if the target is gone.
// SetTargetScans records the last scan of several targets of a site
// (by target hash) in one write. A target deleted meanwhile is skipped.
func (s *Store) SetTargetScans(ctx context.Context, siteUUID string, scans map[string]domain.Scan) error {
	if len(scans) == 0 {
		return nil
	}
	hashes := make([]string, 0, len(scans))
	for h := range scans {
		hashes = append(hashes, h)
	}
	sort.Strings(hashes) // one order, so a retried write is the same write
	models := make([]mongo.WriteModel, 0, len(hashes))
	for _, h := range hashes {
		models = append(models, mongo.NewUpdateOneModel().
			SetFilter(byID(domain.TargetID(siteUUID, h))).
			SetUpdate(bson.D{{Key: "$set", Value: bson.D{{Key: "last_scan", Value: normScan(scans[h])}}}}))
	}
	_, err := s.targets.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
	return wrap("set scans of the targets of site "+siteUUID, err)
}
