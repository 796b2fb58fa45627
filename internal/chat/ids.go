package chat

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// MaxIDLen is the longest user or device identifier Parley accepts, in bytes.
const MaxIDLen = 128

// ErrInvalidID is returned (wrapped) for a malformed user or device identifier.
var ErrInvalidID = errors.New("invalid identifier")

// UserID identifies a user. Parley does not issue user ids: they come from the application's
// identity system through the token's subject, so they are opaque strings.
type UserID string

// DeviceID identifies one device (one app installation) of a user. Cursors, outboxes and
// delivery receipts are kept per device.
type DeviceID string

// ParseUserID validates s as a user id.
func ParseUserID(s string) (UserID, error) {
	if err := validateID("user id", s); err != nil {
		return "", err
	}
	return UserID(s), nil
}

// ParseDeviceID validates s as a device id.
func ParseDeviceID(s string) (DeviceID, error) {
	if err := validateID("device id", s); err != nil {
		return "", err
	}
	return DeviceID(s), nil
}

// validateID accepts 1 to MaxIDLen bytes of printable, non-space ASCII or UTF-8 text. Ids end
// up in NATS subjects, Redis keys and logs, so separators and control characters are refused:
// '.', '*' and '>' are subject tokens in NATS, and whitespace would split a subject.
func validateID(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidID, what)
	}
	if len(s) > MaxIDLen {
		return fmt.Errorf("%w: %s is %d bytes, at most %d allowed", ErrInvalidID, what, len(s), MaxIDLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidID, what)
	}
	for _, r := range s {
		switch {
		case r <= ' ' || r == 0x7f || (r >= 0x80 && r <= 0x9f):
			return fmt.Errorf("%w: %s contains a space or control character", ErrInvalidID, what)
		case r == '.' || r == '*' || r == '>':
			return fmt.Errorf("%w: %s contains %q (reserved)", ErrInvalidID, what, r)
		}
	}
	return nil
}
