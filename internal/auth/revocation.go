package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/parleyhq/parley/internal/chat"
)

// MaxTokenIDLen is the longest jti a revocation may name, in bytes.
const MaxTokenIDLen = 256

// Revocation withdraws tokens before they expire: a logout, a lost or stolen device. It names
// exactly one of
//   - a user: every token of the user issued at or before At;
//   - a user and a device: the user's tokens issued at or before At, on that device (the
//     token's device claim, or the device a connection named when its token has none);
//   - a token id (jti): that one token, whenever it was issued.
//
// "Issued at or before At" compares whole seconds (iat is in seconds): a token issued in the
// same second as the revocation is revoked too, so a new sign-in after a revocation by user is
// accepted from the next second on. A token without iat is treated as issued before every
// revocation: it is refused while a revocation of its user (or device) is stored.
type Revocation struct {
	User    chat.UserID   `json:"user,omitempty"`
	Device  chat.DeviceID `json:"device,omitempty"`
	TokenID string        `json:"jti,omitempty"`
	At      time.Time     `json:"at"`
}

// Validate reports whether r names exactly one of a user, a user's device, or a token id.
func (r Revocation) Validate() error {
	switch {
	case r.TokenID != "":
		if r.User != "" || r.Device != "" {
			return errors.New("revoke by jti alone, or by user (and device)")
		}
		if len(r.TokenID) > MaxTokenIDLen {
			return fmt.Errorf("jti is %d bytes, at most %d allowed", len(r.TokenID), MaxTokenIDLen)
		}
	case r.User == "":
		return errors.New("name a user, a user and a device, or a jti")
	default:
		if _, err := chat.ParseUserID(string(r.User)); err != nil {
			return fmt.Errorf("user: %w", err)
		}
		if r.Device != "" {
			if _, err := chat.ParseDeviceID(string(r.Device)); err != nil {
				return fmt.Errorf("device: %w", err)
			}
		}
	}
	if r.At.IsZero() {
		return errors.New("a revocation needs its time")
	}
	return nil
}

// Matches reports whether r revokes the token id speaks for, used on device (the device the
// connection settled on: the token's claim or, without one, the one the client named).
func (r Revocation) Matches(id Identity, device chat.DeviceID) bool {
	if r.TokenID != "" {
		return id.TokenID == r.TokenID
	}
	if id.User != r.User || (r.Device != "" && device != r.Device) {
		return false
	}
	return id.IssuedAt.IsZero() || id.IssuedAt.Unix() <= r.At.Unix()
}
