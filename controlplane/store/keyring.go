package store

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// ErrNoKey: a stored secret was sealed with a key this control plane does not have.
var ErrNoKey = errors.New("no key to open a stored secret")

// Keyring holds the AES-256 keys that seal the listeners' private keys at rest. The first key seals
// new values; every key opens the values it sealed, so keys can rotate: put a new key first, keep
// the old ones until every gateway was applied again.
type Keyring struct {
	ids   []string
	aeads map[string]cipher.AEAD
}

// ParseKeyring reads keys as lines "ID BASE64-32-BYTES" ('#' starts a comment); the first is current.
func ParseKeyring(text []byte) (*Keyring, error) {
	k := &Keyring{aeads: map[string]cipher.AEAD{}}
	sc := bufio.NewScanner(bytes.NewReader(text))
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(strings.SplitN(sc.Text(), "#", 2)[0])
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("key line %d: want \"ID BASE64KEY\"", line)
		}
		raw, err := base64.StdEncoding.DecodeString(f[1])
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("key line %d (%s): want 32 bytes in base64", line, f[0])
		}
		if _, dup := k.aeads[f[0]]; dup {
			return nil, fmt.Errorf("key line %d: id %q appears twice", line, f[0])
		}
		block, _ := aes.NewCipher(raw)
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		k.ids = append(k.ids, f[0])
		k.aeads[f[0]] = aead
	}
	if len(k.ids) == 0 {
		return nil, errors.New("no key")
	}
	return k, nil
}

// LoadOrCreateKeyring reads a key file, or creates it with one new random key (mode 0600) when it
// does not exist.
func LoadOrCreateKeyring(path string) (*Keyring, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		data = []byte("# Fleetgate encryption keys: \"ID BASE64KEY\", the first seals new values.\nk1 " +
			base64.StdEncoding.EncodeToString(raw) + "\n")
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, fmt.Errorf("create key file: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	k, err := ParseKeyring(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// seal moves the private data of the gateway's SSL certificates into sealed secrets: the stored
// gateway keeps only their public chains.
func (k *Keyring) seal(st *fgv1.StoredGateway, publicPEM func(string) string) error {
	st.Secrets = nil
	for _, c := range st.GetGateway().GetSslCertificates() {
		if c.GetData() == "" {
			continue
		}
		id := k.ids[0]
		aead := k.aeads[id]
		nonce := make([]byte, aead.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return err
		}
		st.Secrets = append(st.Secrets, &fgv1.SealedSecret{
			Name:       c.GetName(),
			KeyId:      id,
			Nonce:      nonce,
			Ciphertext: aead.Seal(nil, nonce, []byte(c.GetData()), aad(st, c.GetName())),
		})
		c.PublicCertData, c.Data = publicPEM(c.GetData()), ""
	}
	return nil
}

// open puts the sealed data back into the gateway's SSL certificates.
func (k *Keyring) open(st *fgv1.StoredGateway) error {
	byName := map[string]*fgv1.SslCertificate{}
	for _, c := range st.GetGateway().GetSslCertificates() {
		byName[c.GetName()] = c
	}
	for _, s := range st.GetSecrets() {
		c := byName[s.GetName()]
		if c == nil {
			continue
		}
		aead := k.aeads[s.GetKeyId()]
		if aead == nil {
			return fmt.Errorf("certificate %q sealed with key %q: %w", s.GetName(), s.GetKeyId(), ErrNoKey)
		}
		plain, err := aead.Open(nil, s.GetNonce(), s.GetCiphertext(), aad(st, s.GetName()))
		if err != nil {
			return fmt.Errorf("certificate %q: sealed value does not open with key %q: %w", s.GetName(), s.GetKeyId(), err)
		}
		c.Data, c.PublicCertData = string(plain), ""
	}
	st.Secrets = nil
	return nil
}

func aad(st *fgv1.StoredGateway, name string) []byte {
	return []byte(st.GetGateway().GetName() + "/" + name)
}
