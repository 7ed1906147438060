package atrest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
)

// magic starts every value sealed with a key id; values without it were
// sealed with the legacy key (nonce ‖ ciphertext).
var magic = []byte("GXK1")

// Keyring seals values with its primary key and opens values sealed with
// any of its keys. It is safe for concurrent use (read-only after New).
//
// A sealed value is magic ‖ len(id) ‖ id ‖ nonce(12) ‖ AES-256-GCM
// ciphertext and tag. The associated data is the header (magic, id) and the
// caller's, e.g. the row's id, so that neither the key id nor the value's
// row can be swapped.
type Keyring struct {
	primary string
	aeads   map[string]cipher.AEAD
}

// New builds a keyring of keys (id → 32 bytes) sealing with primary. legacy,
// when not nil, opens values without a header (credentials.at_rest_key).
func New(keys map[string][]byte, primary string, legacy []byte) (*Keyring, error) {
	k := &Keyring{primary: primary, aeads: map[string]cipher.AEAD{}}
	add := func(id string, key []byte) error {
		if len(key) != 32 {
			return fmt.Errorf("key %s: must be 32 bytes (AES-256), got %d", id, len(key))
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return fmt.Errorf("key %s: %w", id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return err
		}
		k.aeads[id] = aead
		return nil
	}
	for id, key := range keys {
		if !keyIDPattern.MatchString(id) || id == LegacyKeyID {
			return nil, fmt.Errorf("key id %q: letters, digits, '.', '_', '-', at most 64", id)
		}
		if err := add(id, key); err != nil {
			return nil, err
		}
	}
	if legacy != nil {
		if err := add(LegacyKeyID, legacy); err != nil {
			return nil, err
		}
	}
	if primary == "" {
		if legacy == nil {
			return nil, errors.New("no primary key")
		}
		k.primary = LegacyKeyID
	} else if _, ok := k.aeads[primary]; !ok || primary == LegacyKeyID {
		return nil, fmt.Errorf("primary key %q is not configured", primary)
	}
	return k, nil
}

// FromConfig builds the keyring of an at_rest section plus the legacy key.
func FromConfig(c Config, legacy []byte) (*Keyring, error) {
	if !c.Enabled() {
		return New(nil, "", legacy)
	}
	keys, err := ReadKeys(c.KeysDir)
	if err != nil {
		return nil, err
	}
	return New(keys, c.PrimaryID(keys), legacy)
}

// Primary is the id new values are sealed with.
func (k *Keyring) Primary() string { return k.primary }

// Has reports whether the keyring holds key id.
func (k *Keyring) Has(id string) bool { _, ok := k.aeads[id]; return ok }

// Seal encrypts plain under the primary key, bound to ad.
func (k *Keyring) Seal(plain, ad []byte) ([]byte, error) {
	aead := k.aeads[k.primary]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	if k.primary == LegacyKeyID {
		return aead.Seal(nonce, nonce, plain, ad), nil
	}
	hdr := header(k.primary)
	out := append(append([]byte(nil), hdr...), nonce...)
	return aead.Seal(out, nonce, plain, append(append([]byte(nil), hdr...), ad...)), nil
}

func header(id string) []byte {
	return append(append(append([]byte(nil), magic...), byte(len(id))), id...)
}

// KeyID is the id of the key sealed was sealed with (LegacyKeyID for a
// value without header).
func KeyID(sealed []byte) string {
	id, _, ok := split(sealed)
	if !ok {
		return LegacyKeyID
	}
	return id
}

// split parses the header; ok is false for a legacy value.
func split(sealed []byte) (id string, rest []byte, ok bool) {
	if !bytes.HasPrefix(sealed, magic) || len(sealed) < len(magic)+1 {
		return "", nil, false
	}
	n := int(sealed[len(magic)])
	if n == 0 || len(sealed) < len(magic)+1+n {
		return "", nil, false
	}
	id = string(sealed[len(magic)+1 : len(magic)+1+n])
	if !keyIDPattern.MatchString(id) {
		return "", nil, false
	}
	return id, sealed[len(magic)+1+n:], true
}

// Open decrypts a value sealed by Seal (with any key of the keyring, or the
// legacy key) and bound to ad. Errors wrap ErrUnknownKey, ErrWrongKey or
// ErrMalformed and name the key id.
func (k *Keyring) Open(sealed, ad []byte) ([]byte, error) {
	id, rest, ok := split(sealed)
	if ok {
		aead, have := k.aeads[id]
		if !have {
			return nil, fmt.Errorf("%w: key id %q (configured: %s)", ErrUnknownKey, id, strings.Join(k.ids(), ", "))
		}
		if len(rest) < aead.NonceSize() {
			return nil, fmt.Errorf("%w: key id %q", ErrMalformed, id)
		}
		plain, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], append(header(id), ad...))
		if err != nil {
			return nil, fmt.Errorf("%w: key id %q", ErrWrongKey, id)
		}
		return plain, nil
	}
	aead, have := k.aeads[LegacyKeyID]
	if !have {
		return nil, fmt.Errorf("%w: a value without key id needs the legacy key (credentials.at_rest_key)", ErrUnknownKey)
	}
	if len(sealed) < aead.NonceSize() {
		return nil, ErrMalformed
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], ad)
	if err != nil {
		return nil, fmt.Errorf("%w: key id %q (credentials.at_rest_key)", ErrWrongKey, LegacyKeyID)
	}
	return plain, nil
}

func (k *Keyring) ids() []string {
	m := make(map[string][]byte, len(k.aeads))
	for id := range k.aeads {
		m[id] = nil
	}
	return sortedIDs(m)
}
