package store

import (
	"context"
	"errors"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/satoru/satoru/shared/domain"
)

// GetSyncState reads an offsite repo's sync state. A repo never synced has
// status "unknown"; that is not an error (like GetSiteStatus).
func (s *Store) GetSyncState(ctx context.Context, id string) (domain.SyncState, error) {
	var st domain.SyncState
	err := s.syncState.FindOne(ctx, byID(id)).Decode(&st)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return domain.SyncState{ID: id, Status: domain.HealthUnknown}, nil
	}
	if err != nil {
		return domain.SyncState{}, wrap("get sync state "+id, err)
	}
	return st, nil
}

// PutSyncState writes an offsite repo's whole sync state (insert or
// replace). Only the syncer holding the repo's job calls it.
func (s *Store) PutSyncState(ctx context.Context, st domain.SyncState) error {
	if st.ID == "" {
		return errors.New("store: put sync state: empty id")
	}
	st.LastAttemptAt = tsp(st.LastAttemptAt)
	st.LastSuccessAt = tsp(st.LastSuccessAt)
	_, err := s.syncState.ReplaceOne(ctx, byID(st.ID), st, options.Replace().SetUpsert(true))
	return wrap("put sync state "+st.ID, err)
}
