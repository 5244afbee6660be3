package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// CodeForbidden: the token is valid but its role may not do this.
const CodeForbidden = "forbidden"

// TokenInput is the body of POST /tokens.
type TokenInput struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// Token is a scoped API token as the API lists it (never its secret).
type Token struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

// TokenCreated is the answer of POST /tokens: the secret is shown once.
type TokenCreated struct {
	Body
	Token
	Secret string `json:"secret"`
}

// TokenList is the answer of GET /tokens.
type TokenList struct {
	Body
	Tokens []Token `json:"tokens"`
}

// Me is the answer of GET /me: the calling token's name and role.
type Me struct {
	Body
	Name    string `json:"name"`
	Role    string `json:"role"`
	TokenID string `json:"token_id,omitempty"`
}

// AuditEntry is one entry of the audit trail.
type AuditEntry struct {
	ID        string            `json:"id"`
	At        time.Time         `json:"at"`
	Token     string            `json:"token"`
	Role      string            `json:"role"`
	Remote    string            `json:"remote"`
	Action    string            `json:"action"`
	Method    string            `json:"method"`
	Route     string            `json:"route"`
	SiteUUID  string            `json:"site_uuid,omitempty"`
	IDs       map[string]string `json:"ids,omitempty"`
	Detail    map[string]string `json:"detail,omitempty"`
	Status    int               `json:"status"`
	RequestID string            `json:"request_id,omitempty"`
}

// AuditList is the answer of GET /audit; Next is the next page's Before.
type AuditList struct {
	Body
	Entries []AuditEntry `json:"entries"`
	Next    string       `json:"next,omitempty"`
}

// AuditQuery filters GET /audit; zero fields are not sent.
type AuditQuery struct {
	Token, Action, SiteUUID, Before string
	Since, Until                    time.Time
	Limit                           int
}

// Me is GET /me.
func (c *Client) Me(ctx context.Context) (Me, error) {
	var out Me
	return out, c.do(ctx, http.MethodGet, c.endpoint(nil, "me"), nil, &out)
}

// CreateToken is POST /tokens.
func (c *Client) CreateToken(ctx context.Context, in TokenInput) (TokenCreated, error) {
	var out TokenCreated
	return out, c.do(ctx, http.MethodPost, c.endpoint(nil, "tokens"), in, &out)
}

// ListTokens is GET /tokens.
func (c *Client) ListTokens(ctx context.Context) (TokenList, error) {
	var out TokenList
	return out, c.do(ctx, http.MethodGet, c.endpoint(nil, "tokens"), nil, &out)
}

// RevokeToken is DELETE /tokens/{id or name}.
func (c *Client) RevokeToken(ctx context.Context, ref string) error {
	return c.do(ctx, http.MethodDelete, c.endpoint(nil, "tokens", ref), nil, nil)
}

// ListAudit is GET /audit.
func (c *Client) ListAudit(ctx context.Context, q AuditQuery) (AuditList, error) {
	v := url.Values{}
	for k, s := range map[string]string{"token": q.Token, "action": q.Action, "site_uuid": q.SiteUUID, "before": q.Before} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out AuditList
	return out, c.do(ctx, http.MethodGet, c.endpoint(v, "audit"), nil, &out)
}
