package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Scoped API tokens and the audit trail (the API is their only writer).
//
// "api_tokens" is keyed by the SHA-256 of the token (hex), so the API
// finds a bearer token with one lookup by _id and the secret itself is
// never stored. "audit" is keyed by a time-ordered id (AuditID) so that a
// listing sorted by _id is newest first; the audit pass
// (PruneAudit, run by the scheduler) bounds it, as there are no TTL
// indexes.
const (
	collTokens = "api_tokens"
	collAudit  = "audit"
)

// Token is a scoped API token as stored: never the secret, only its hash.
type Token struct {
	// Hash is the hex SHA-256 of the secret.
	Hash string `bson:"_id" json:"-"`
	// ID is the token's public id (revoke by it or by Name).
	ID        string    `bson:"id" json:"id"`
	Name      string    `bson:"name" json:"name"`
	Role      string    `bson:"role" json:"role"`
	CreatedAt time.Time `bson:"created_at" json:"created_at"`
	// CreatedBy is the name of the token that created it.
	CreatedBy string `bson:"created_by" json:"created_by"`
}

// AuditEntry is one recorded request: who, when, from where, what, and
// the outcome. It holds no request body, so no secret.
type AuditEntry struct {
	ID     string    `bson:"_id" json:"id"`
	At     time.Time `bson:"at" json:"at"`
	Token  string    `bson:"token" json:"token"`
	Role   string    `bson:"role" json:"role"`
	Remote string    `bson:"remote" json:"remote"`
	// Action names what was asked ("site.create", "restore.create", ...).
	Action   string `bson:"action" json:"action"`
	Method   string `bson:"method" json:"method"`
	Route    string `bson:"route" json:"route"`
	SiteUUID string `bson:"site_uuid,omitempty" json:"site_uuid,omitempty"`
	// IDs are the ids the request named (path parameters) or created
	// (job_id, token_id); Detail a few non-secret facts (job type,
	// restore destination kind, downloaded path).
	IDs    map[string]string `bson:"ids,omitempty" json:"ids,omitempty"`
	Detail map[string]string `bson:"detail,omitempty" json:"detail,omitempty"`
	Status int               `bson:"status" json:"status"`
	// RequestID is the X-Request-Id of the request (the API's log line).
	RequestID string `bson:"request_id,omitempty" json:"request_id,omitempty"`
}

// AuditID is a time-ordered _id: zero-padded Unix milliseconds, then a
// random suffix that keeps ids of one millisecond apart.
func AuditID(at time.Time, suffix string) string {
	return fmt.Sprintf("%015d-%s", ts(at).UnixMilli(), suffix)
}

// AuditFilter selects audit entries; zero fields match everything.
type AuditFilter struct {
	Token, Action, SiteUUID string
	// Since (inclusive) and Until (exclusive) bound At.
	Since, Until time.Time
	// Before is a page cursor: only entries with a smaller id (older).
	Before string
	// Limit is the page size (0 means 100).
	Limit int
}

func (s *Store) tokens() *mongo.Collection { return s.db.Collection(collTokens) }
func (s *Store) audit() *mongo.Collection  { return s.db.Collection(collAudit) }

// ensureAccess creates the token and audit collections (so the embedded
// store indexes their _id lookups) and a unique index on token names.
func (s *Store) ensureAccess(ctx context.Context) error {
	names, err := s.db.ListCollectionNames(ctx, bson.D{})
	if err != nil {
		return fmt.Errorf("list collections: %w", err)
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	for _, n := range []string{collTokens, collAudit} {
		if have[n] {
			continue
		}
		err := s.db.CreateCollection(ctx, n)
		var ce mongo.CommandError
		if errors.As(err, &ce) && ce.Code == 48 { // NamespaceExists: another process made it
			err = nil
		}
		if err != nil {
			return fmt.Errorf("create collection %s: %w", n, err)
		}
	}
	m := mongo.IndexModel{Keys: bson.D{{Key: "name", Value: 1}}, Options: options.Index().SetUnique(true).SetName("name_unique")}
	if _, err := s.tokens().Indexes().CreateOne(ctx, m); err != nil {
		return fmt.Errorf("indexes of %s: %w", collTokens, err)
	}
	return nil
}

// CreateToken stores a token; a taken name (or hash) wraps ErrConflict.
func (s *Store) CreateToken(ctx context.Context, t Token) error {
	if t.Hash == "" || t.ID == "" || t.Name == "" {
		return errors.New("store: create token: hash, id and name are required")
	}
	t.CreatedAt = ts(t.CreatedAt)
	n, err := s.tokens().CountDocuments(ctx, bson.D{{Key: "name", Value: t.Name}})
	if err != nil {
		return wrap("create token "+t.Name, err)
	}
	if n > 0 {
		return fmt.Errorf("store: create token %s: %w", t.Name, ErrConflict)
	}
	_, err = s.tokens().InsertOne(ctx, t)
	return wrap("create token "+t.Name, err)
}

// TokenByHash finds a token by the hex SHA-256 of its secret; an unknown
// one wraps ErrNotFound.
func (s *Store) TokenByHash(ctx context.Context, hash string) (Token, error) {
	var t Token
	err := s.tokens().FindOne(ctx, byID(hash)).Decode(&t)
	if err != nil {
		return Token{}, wrap("find token", err)
	}
	return t, nil
}

// ListTokens lists every token, oldest first.
func (s *Store) ListTokens(ctx context.Context) ([]Token, error) {
	cur, err := s.tokens().Find(ctx, bson.D{})
	if err != nil {
		return nil, wrap("list tokens", err)
	}
	out := []Token{}
	if err := cur.All(ctx, &out); err != nil {
		return nil, wrap("list tokens", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// DeleteToken revokes the token whose id or name is ref and returns it;
// an unknown one wraps ErrNotFound.
func (s *Store) DeleteToken(ctx context.Context, ref string) (Token, error) {
	var t Token
	err := s.tokens().FindOne(ctx, bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "id", Value: ref}}, bson.D{{Key: "name", Value: ref}},
	}}}).Decode(&t)
	if err != nil {
		return Token{}, wrap("revoke token "+ref, err)
	}
	res, err := s.tokens().DeleteOne(ctx, byID(t.Hash))
	if err != nil {
		return Token{}, wrap("revoke token "+ref, err)
	}
	if res.DeletedCount == 0 {
		return Token{}, fmt.Errorf("store: revoke token %s: %w", ref, ErrNotFound)
	}
	return t, nil
}

// InsertAudit records one audit entry.
func (s *Store) InsertAudit(ctx context.Context, e AuditEntry) error {
	if e.ID == "" {
		return errors.New("store: insert audit entry: empty id")
	}
	e.At = ts(e.At)
	_, err := s.audit().InsertOne(ctx, e)
	return wrap("insert audit entry "+e.Action, err)
}

// ListAudit lists the entries f selects, newest first. On the embedded
// store this reads the whole collection, which the audit pass bounds.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q := bson.D{}
	for _, kv := range []struct{ k, v string }{{"token", f.Token}, {"action", f.Action}, {"site_uuid", f.SiteUUID}} {
		if kv.v != "" {
			q = append(q, bson.E{Key: kv.k, Value: kv.v})
		}
	}
	at := bson.D{}
	if !f.Since.IsZero() {
		at = append(at, bson.E{Key: "$gte", Value: ts(f.Since)})
	}
	if !f.Until.IsZero() {
		at = append(at, bson.E{Key: "$lt", Value: ts(f.Until)})
	}
	if len(at) > 0 {
		q = append(q, bson.E{Key: "at", Value: at})
	}
	if f.Before != "" {
		q = append(q, bson.E{Key: "_id", Value: bson.D{{Key: "$lt", Value: f.Before}}})
	}
	cur, err := s.audit().Find(ctx, q, options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}).SetLimit(int64(limit)))
	if err != nil {
		return nil, wrap("list audit", err)
	}
	out := []AuditEntry{}
	if err := cur.All(ctx, &out); err != nil {
		return nil, wrap("list audit", err)
	}
	return out, nil
}

// PruneAudit deletes the entries recorded before `before` and returns
// how many (audit_retention_days; the store has no TTL indexes).
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.audit().DeleteMany(ctx, bson.D{{Key: "at", Value: bson.D{{Key: "$lt", Value: ts(before)}}}})
	if err != nil {
		return 0, wrap("prune audit", err)
	}
	return res.DeletedCount, nil
}
