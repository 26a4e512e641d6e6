package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-dev/custos/keys"
)

// vectorsDir is where the Wycheproof files live, inside the module (see its
// README for their source and licence). A missing file fails the test.
const vectorsDir = "testdata/wycheproof"

type jwsFile struct {
	TestGroups []struct {
		Comment string          `json:"comment"`
		Public  json.RawMessage `json:"public"`
		Private json.RawMessage `json:"private"`
		Tests   []struct {
			TcID    int    `json:"tcId"`
			Comment string `json:"comment"`
			JWS     string `json:"jws"`
			Result  string `json:"result"`
		} `json:"tests"`
	} `json:"testGroups"`
}

// headerAlg reads alg from a vector's header leniently, only to classify it.
func headerAlg(jws string) string {
	h, _, _ := strings.Cut(jws, ".")
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(h, "="))
	if err != nil {
		return ""
	}
	var x struct {
		Alg string `json:"alg"`
	}
	_ = json.Unmarshal(b, &x)
	return x.Alg
}

// verifyWithSet is what a custos verifier does with a token and a key set:
// parse strictly, look the kid up, verify with the key's own algorithm.
func verifyWithSet(jws string, set []keys.Key) error {
	p, err := parseJWS(jws)
	if err != nil {
		return err
	}
	for _, k := range set {
		if k.KID == p.Header.KID {
			return VerifySignature(p, k.Alg, k.Public)
		}
	}
	return errors.New("unknown kid")
}

func loadKeySet(raw json.RawMessage) ([]keys.Key, error) {
	var probe struct {
		Keys json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &probe); err == nil && probe.Keys != nil {
		return ParseJWKS(raw)
	}
	k, err := ParseJWK(raw)
	if err != nil {
		return nil, err
	}
	return []keys.Key{k}, nil
}

func runJWSVectors(t *testing.T, file string) {
	b, err := os.ReadFile(filepath.Join(vectorsDir, file))
	if err != nil {
		t.Fatal(err)
	}
	var f jwsFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	var ran, skippedValid, acceptable int
	for _, g := range f.TestGroups {
		raw := g.Public
		if len(raw) == 0 || string(raw) == "null" {
			raw = g.Private
		}
		set, keyErr := loadKeySet(raw)
		for _, tc := range g.Tests {
			alg := headerAlg(tc.JWS)
			supported := alg == string(keys.EdDSA) || alg == string(keys.ES256) || alg == string(keys.RS256)
			var err error
			if keyErr != nil {
				err = keyErr
			} else {
				err = verifyWithSet(tc.JWS, set)
			}
			switch tc.Result {
			case "valid":
				if tc.Comment == "emptyPayload" {
					// An access token always carries claims: Parse
					// refuses an empty payload by design.
					skippedValid++
					if err == nil {
						t.Errorf("tc %d (%s/%s): empty payload accepted", tc.TcID, g.Comment, tc.Comment)
					}
					continue
				}
				if !supported {
					// HS*, RS384/512, PS*, ES512: custos never accepts them, by design.
					skippedValid++
					if err == nil {
						t.Errorf("tc %d (%s/%s): %s accepted", tc.TcID, g.Comment, tc.Comment, alg)
					}
					continue
				}
				ran++
				if err != nil {
					t.Errorf("tc %d (%s/%s): valid vector refused: %v", tc.TcID, g.Comment, tc.Comment, err)
				}
			case "invalid":
				ran++
				if err == nil {
					t.Errorf("tc %d (%s/%s): invalid vector accepted", tc.TcID, g.Comment, tc.Comment)
				}
			default:
				acceptable++
				t.Logf("tc %d (%s/%s): acceptable; custos %s", tc.TcID, g.Comment, tc.Comment, map[bool]string{true: "accepts", false: "refuses"}[err == nil])
			}
		}
	}
	t.Logf("%s: %d cases checked, %d valid cases skipped (algorithm not supported, or empty payload, by design, and refused), %d acceptable", file, ran, skippedValid, acceptable)
	if ran == 0 {
		t.Fatal("no vectors ran")
	}
}

func TestWycheproofJWS(t *testing.T) { runJWSVectors(t, "json_web_signature_test.json") }
func TestWycheproofJWK(t *testing.T) { runJWSVectors(t, "json_web_key_test.json") }

type sigFile struct {
	TestGroups []struct {
		PublicKey struct {
			PK           string `json:"pk"`
			Uncompressed string `json:"uncompressed"`
		} `json:"publicKey"`
		PublicKeyJwk json.RawMessage `json:"publicKeyJwk"`
		Tests        []struct {
			TcID    int    `json:"tcId"`
			Comment string `json:"comment"`
			Msg     string `json:"msg"`
			Sig     string `json:"sig"`
			Result  string `json:"result"`
		} `json:"tests"`
	} `json:"testGroups"`
}

func runSigVectors(t *testing.T, file string, alg keys.Alg) {
	b, err := os.ReadFile(filepath.Join(vectorsDir, file))
	if err != nil {
		t.Fatal(err)
	}
	var f sigFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	var ran, badKeys int
	for gi, g := range f.TestGroups {
		var k keys.Key
		var keyErr error
		if len(g.PublicKeyJwk) > 0 {
			k, keyErr = ParseJWK(g.PublicKeyJwk)
		} else {
			// Groups without a JWK give the point uncompressed only.
			k.Alg = alg
			raw, _ := hex.DecodeString(g.PublicKey.Uncompressed)
			k.Public, keyErr = ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
		}
		if keyErr == nil && k.Alg != alg {
			t.Fatalf("group %d: key parsed as %s, want %s", gi, k.Alg, alg)
		}
		if keyErr != nil {
			badKeys++
			t.Logf("group %d: key refused: %v", gi, keyErr)
		}
		for _, tc := range g.Tests {
			ran++
			msg, err1 := hex.DecodeString(tc.Msg)
			sig, err2 := hex.DecodeString(tc.Sig)
			if err1 != nil || err2 != nil {
				t.Fatalf("tc %d: bad hex", tc.TcID)
			}
			err := keyErr
			if err == nil {
				err = verify(alg, k.Public, msg, sig)
			}
			switch tc.Result {
			case "valid":
				if err != nil {
					t.Errorf("tc %d (%s): valid signature refused: %v", tc.TcID, tc.Comment, err)
				}
			case "invalid":
				if err == nil {
					t.Errorf("tc %d (%s): invalid signature accepted", tc.TcID, tc.Comment)
				}
			default:
				t.Logf("tc %d (%s): acceptable; accepted=%v", tc.TcID, tc.Comment, err == nil)
			}
		}
	}
	t.Logf("%s: %d cases checked, %d keys refused", file, ran, badKeys)
	if ran == 0 || badKeys == len(f.TestGroups) {
		t.Fatalf("%s: %d cases ran with %d of %d keys usable: the file proves nothing", file, ran, len(f.TestGroups)-badKeys, len(f.TestGroups))
	}
}

func TestWycheproofEd25519(t *testing.T) {
	runSigVectors(t, "ed25519_test.json", keys.EdDSA)
}

func TestWycheproofP256P1363(t *testing.T) {
	runSigVectors(t, "ecdsa_secp256r1_sha256_p1363_test.json", keys.ES256)
}
