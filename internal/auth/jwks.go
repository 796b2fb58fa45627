package auth

import (
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
)

// KeySet holds the public keys that verify RS256 and EdDSA tokens, by key id.
type KeySet struct {
	rsa     map[string]*rsa.PublicKey
	ed25519 map[string]ed25519.PublicKey
}

// Len is the number of keys.
func (k *KeySet) Len() int {
	if k == nil {
		return 0
	}
	return len(k.rsa) + len(k.ed25519)
}

// LoadJWKS reads a JSON Web Key Set file (RFC 7517) holding RSA (kty "RSA") and Ed25519
// (kty "OKP", crv "Ed25519") public keys. Keys marked for another use than "sig" and keys of
// other types are skipped; a set with no usable key is an error.
func LoadJWKS(path string) (*KeySet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	ks, err := ParseJWKS(data)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", path, err)
	}
	return ks, nil
}

// ParseJWKS parses a JSON Web Key Set; see LoadJWKS.
func ParseJWKS(data []byte) (*KeySet, error) {
	var doc struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			Use string `json:"use"`
			Alg string `json:"alg"`
			N   string `json:"n"`
			E   string `json:"e"`
			Crv string `json:"crv"`
			X   string `json:"x"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not a JWK set: %v", err)
	}
	ks := &KeySet{rsa: map[string]*rsa.PublicKey{}, ed25519: map[string]ed25519.PublicKey{}}
	for i, k := range doc.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		switch {
		case k.Kty == "RSA" && (k.Alg == "" || k.Alg == "RS256"):
			n, err1 := b64int(k.N)
			e, err2 := b64int(k.E)
			if err1 != nil || err2 != nil || !e.IsInt64() || e.Int64() < 3 || n.BitLen() < 2048 {
				return nil, fmt.Errorf("key %d (%q): invalid RSA key (want n of at least 2048 bits and e)", i, k.Kid)
			}
			ks.rsa[k.Kid] = &rsa.PublicKey{N: n, E: int(e.Int64())}
		case k.Kty == "OKP" && k.Crv == "Ed25519" && (k.Alg == "" || k.Alg == "EdDSA"):
			x, err := base64.RawURLEncoding.DecodeString(k.X)
			if err != nil || len(x) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("key %d (%q): invalid Ed25519 key", i, k.Kid)
			}
			ks.ed25519[k.Kid] = ed25519.PublicKey(x)
		}
	}
	if ks.Len() == 0 {
		return nil, fmt.Errorf("no RS256 or EdDSA signing key in the set")
	}
	return ks, nil
}

func b64int(s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("bad base64url integer")
	}
	return new(big.Int).SetBytes(b), nil
}

// key returns the key for a token's alg and kid. A token without kid matches when the set has
// exactly one key of that type.
func (k *KeySet) key(alg, kid string) (any, bool) {
	if k == nil {
		return nil, false
	}
	switch alg {
	case "RS256":
		return pick(k.rsa, kid)
	case "EdDSA":
		return pick(k.ed25519, kid)
	}
	return nil, false
}

func pick[V any](m map[string]V, kid string) (any, bool) {
	if v, ok := m[kid]; ok {
		return v, true
	}
	if kid == "" && len(m) == 1 {
		for _, v := range m {
			return v, true
		}
	}
	return nil, false
}

func (k *KeySet) rsaKeys() map[string]*rsa.PublicKey {
	if k == nil {
		return nil
	}
	return k.rsa
}

func (k *KeySet) edKeys() map[string]ed25519.PublicKey {
	if k == nil {
		return nil
	}
	return k.ed25519
}
