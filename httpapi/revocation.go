package httpapi

import (
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
)

// Revocations says whether a token has been revoked (internal/revocation.Store, the same copy
// the edge checks handshakes against): id is the verified token, device the device it is used
// on. REST requests name no device of their own, so device is the token's device claim (empty
// when it has none: such a token is revoked by user or by jti only).
type Revocations interface {
	Revoked(id auth.Identity, device chat.DeviceID) bool
}

// EnableRevocations makes every authenticated route refuse a revoked token with 401 and the
// error token_revoked. Call before serving.
func (a *API) EnableRevocations(r Revocations) { a.revoked = r }
