// Package auth mints and verifies the JSON Web Tokens that authenticate Parley's users on the
// WebSocket handshake and the REST API. A token's subject is the user id; the optional
// "device" claim names the device. Signing methods are restricted to the configured ones and
// "exp" is required, so a token without an expiry or signed with "none" is never accepted.
//
// It uses github.com/golang-jwt/jwt/v5, the maintained JWT library for Go, rather than
// hand-written JOSE parsing: algorithm confusion and claim validation are easy to get wrong.
package auth
