package ledger

import (
	"errors"
	"testing"
)

// The lookup body is read by the one strict rule: a hash named twice, in
// any letter case, or miscased, is a bad request, never a lookup of either.
func TestParseLookupRequestStrict(t *testing.T) {
	a, b := testHash(1).String(), testHash(2).String()
	for name, body := range map[string]string{
		"duplicate":      `{"hash":"` + a + `","hash":"` + b + `"}`,
		"duplicate-case": `{"hash":"` + a + `","HASH":"` + b + `"}`,
		"miscased":       `{"Hash":"` + a + `"}`,
		"unknown":        `{"hash":"` + a + `","kid":"k"}`,
		"trailing":       `{"hash":"` + a + `"}{}`,
		"not-utf8":       "{\"hash\":\"" + a + "\",\"x\xff\":1}",
	} {
		if h, err := ParseLookupRequest([]byte(body)); !errors.Is(err, ErrBadRequest) || h != (Hash{}) {
			t.Errorf("%s: %v %v, want ErrBadRequest", name, h, err)
		}
	}
	if h, err := ParseLookupRequest([]byte(`{"hash":"` + a + `"}`)); err != nil || h != testHash(1) {
		t.Fatalf("plain lookup: %v %v", h, err)
	}
}
