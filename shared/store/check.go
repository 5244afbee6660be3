package store

import (
	"context"
	"errors"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/satoru/satoru/shared/domain"
)

// GetCheckState reads the repository check state. A repository never
// checked has status "unknown"; that is not an error.
func (s *Store) GetCheckState(ctx context.Context) (domain.CheckState, error) {
	var st domain.CheckState
	err := s.checkState.FindOne(ctx, byID(domain.CheckStateID)).Decode(&st)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return domain.CheckState{ID: domain.CheckStateID, Status: domain.HealthUnknown, Repositories: []domain.CheckRepoResult{}}, nil
	}
	if err != nil {
		return domain.CheckState{}, wrap("get check state", err)
	}
	if st.Repositories == nil {
		st.Repositories = []domain.CheckRepoResult{}
	}
	return st, nil
}

// PutCheckState writes the whole check state (insert or replace). Only
// the snapshotter running a check job calls it.
func (s *Store) PutCheckState(ctx context.Context, st domain.CheckState) error {
	st.ID = domain.CheckStateID
	st.LastAttemptAt = tsp(st.LastAttemptAt)
	st.LastSuccessAt = tsp(st.LastSuccessAt)
	for i := range st.Repositories {
		st.Repositories[i].CheckedAt = tsp(st.Repositories[i].CheckedAt)
	}
	_, err := s.checkState.ReplaceOne(ctx, byID(st.ID), st, options.Replace().SetUpsert(true))
	return wrap("put check state", err)
}
