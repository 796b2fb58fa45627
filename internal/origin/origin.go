// Package origin is the allowlist of browser origins: one setting (parleyd's
// --allowed-origins) for both doors a browser knocks on, the edge's WebSocket handshake and
// the REST API's CORS, matched the same way at both.
//
// An entry is an origin, scheme://host[:port] (https://app.example.com), compared without
// regard to case and to a trailing slash, or "*" for any origin. There are no partial
// wildcards: "https://*.example.com" is refused rather than read one way by one door and
// another way by the other.
package origin

import (
	"fmt"
	"net/url"
	"strings"
)

// Any is the entry that allows every origin.
const Any = "*"

// Validate reports the first entry of origins that is neither an origin nor Any.
func Validate(origins []string) error {
	for _, o := range origins {
		if o == Any {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") ||
			u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Contains(o, "*") {
			return fmt.Errorf("allowed origin %q: want scheme://host[:port] or *", o)
		}
	}
	return nil
}

// Allowed reports whether a request's Origin header value is in origins. An empty value (no
// Origin header) is not: whoever accepts requests without one decides that apart.
func Allowed(origins []string, origin string) bool {
	if origin == "" {
		return false
	}
	for _, o := range origins {
		if o == Any || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

// Describe says in a few words which origins are allowed, for the start-up log.
func Describe(origins []string) string {
	if len(origins) == 0 {
		return "none: browsers are refused (set --allowed-origins)"
	}
	return strings.Join(origins, ",")
}
