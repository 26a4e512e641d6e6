package shop

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

var testPop = Population{Members: 337, Missing: 440, Decoys: 64, Seed: 7}

func TestPopulationKinds(t *testing.T) {
	tests := []struct {
		name string
		pop  Population
	}{
		{"ok/tiny", Population{Members: 1, Seed: 1}},
		{"ok/no-gaps", Population{Members: 100, Seed: 1}},
		{"ok/scenario-ratio", testPop},
		{"ok/all-gaps-decoys", Population{Members: 5, Missing: 7, Decoys: 7, Seed: 3}},
		{"ok/big-ids", Population{Members: 3_370_000_000, Missing: 4_400_000_000, Decoys: 64, Seed: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.pop.Validate(); err != nil {
				t.Fatal(err)
			}
			n := tt.pop.IDSpace()
			if n > 100_000 { // check the mapping only
				for _, i := range []uint64{1, 2, tt.pop.Members / 2, tt.pop.Members} {
					id := tt.pop.MemberID(i)
					if tt.pop.Kind(id) != Member || tt.pop.memberRank(id) != i {
						t.Fatalf("MemberID(%d)=%d kind %v rank %d", i, id, tt.pop.Kind(id), tt.pop.memberRank(id))
					}
				}
				return
			}
			var counts [3]uint64
			for id := uint64(0); id <= n+3; id++ {
				counts[tt.pop.Kind(id)]++
			}
			if counts[Member] != tt.pop.Members || counts[Decoy] != tt.pop.Decoys {
				t.Fatalf("counts %v, want members %d decoys %d", counts, tt.pop.Members, tt.pop.Decoys)
			}
			if got, want := counts[Missing], tt.pop.Missing-tt.pop.Decoys+4; got != want { // +0 and 3 above
				t.Fatalf("missing %d, want %d", got, want)
			}
			for i := uint64(1); i <= tt.pop.Members; i++ {
				id := tt.pop.MemberID(i)
				if tt.pop.Kind(id) != Member || tt.pop.memberRank(id) != i {
					t.Fatalf("MemberID(%d)=%d not the i-th member", i, id)
				}
			}
		})
	}
}

func TestPopulationValidate(t *testing.T) {
	for name, p := range map[string]Population{
		"fail/no-members":  {Missing: 3},
		"fail/decoys>gaps": {Members: 3, Missing: 1, Decoys: 2},
		"fail/overflow":    {Members: 1 << 63, Missing: 1 << 63},
	} {
		t.Run(name, func(t *testing.T) {
			if err := p.Validate(); err == nil {
				t.Fatal("want error")
			}
		})
	}
}

func TestDataConsistent(t *testing.T) {
	other := testPop
	other.Seed++
	differ := 0
	for id := uint64(1); id <= testPop.IDSpace(); id++ {
		a, okA := testPop.Profile(id)
		b, okB := testPop.Profile(id)
		if okA != testPop.Exists(id) || okA != okB || a != b {
			t.Fatalf("id %d: profile not stable", id)
		}
		if !okA {
			continue
		}
		c, _ := other.Profile(id)
		if c != a {
			differ++
		}
		book, _ := testPop.AddressBook(id)
		rec := testPop.Recipients(id)
		if len(book) != len(rec) || len(book) != testPop.BookSize(id) || rec[0] != strconv.FormatUint(id, 10) {
			t.Fatalf("id %d: book %d recipients %v size %d", id, len(book), rec, testPop.BookSize(id))
		}
		if book[0].Name != a.Name {
			t.Fatalf("id %d: holder name %q in book, %q in profile", id, book[0].Name, a.Name)
		}
		nm := 0
		for i, r := range rec {
			if strings.HasPrefix(r, NonMemberPrefix) {
				nm++
			} else if i > 0 {
				o, _ := ParseMember(r)
				if testPop.Kind(o) != Member {
					t.Fatalf("id %d lists %s, not a member", id, r)
				}
				if p, _ := testPop.Profile(o); p.Name != book[i].Name {
					t.Fatalf("member %s named %q in book, %q in profile", r, book[i].Name, p.Name)
				}
			}
		}
		if nm != testPop.NonMembers(id) {
			t.Fatalf("id %d: %d non-members listed, NonMembers says %d", id, nm, testPop.NonMembers(id))
		}
		if testPop.Kind(id) == Decoy && len(rec) != 1 {
			t.Fatalf("decoy %d has recipients %v", id, rec)
		}
	}
	if differ == 0 {
		t.Fatal("another seed gives the same people")
	}
}

func TestNonMemberRatio(t *testing.T) {
	p := Population{Members: 400_000, Missing: 0, Seed: 11}
	var nm int
	for i := uint64(1); i <= p.Members; i++ {
		nm += p.NonMembers(i)
	}
	got := float64(nm) / float64(p.Members)
	want := 4.33 / 33.7
	if got < want*0.97 || got > want*1.03 {
		t.Fatalf("non-members per member %.4f, want %.4f ±3%%", got, want)
	}
}

func TestRoutes(t *testing.T) {
	rs := Routes()
	if len(rs) != 4 {
		t.Fatalf("%d routes", len(rs))
	}
	for _, r := range rs {
		if r.SubjectParam != SubjectParam || !strings.Contains(r.Pattern, "{"+SubjectParam+"}") || len(r.DataClasses) == 0 {
			t.Fatalf("bad route %+v", r)
		}
	}
	rs[0].DataClasses[0] = "changed"
	if Routes()[0].DataClasses[0] == "changed" {
		t.Fatal("Routes shares its slices")
	}
}

func TestHandler(t *testing.T) {
	s, err := New(testPop)
	if err != nil {
		t.Fatal(err)
	}
	member, decoy, missing := uint64(0), uint64(0), uint64(0)
	bigBook := uint64(0)
	for id := uint64(1); id <= testPop.IDSpace(); id++ {
		switch testPop.Kind(id) {
		case Member:
			if member == 0 {
				member = id
			}
			if bigBook == 0 && testPop.BookSize(id) > 1 {
				bigBook = id
			}
		case Decoy:
			decoy = id
		case Missing:
			missing = id
		}
	}
	m := strconv.FormatUint(member, 10)
	bb := strconv.FormatUint(bigBook, 10)
	tests := []struct {
		name, path string
		status     int
		want       string
	}{
		{"ok/profile", "/api/members/" + m + "/profile", 200, `"email"`},
		{"ok/addresses", "/api/members/" + bb + "/addresses", 200, `"address"`},
		{"ok/edit", "/api/members/" + bb + "/addresses/1/edit", 200, `"entrance_code"`},
		{"ok/orders", "/api/members/" + m + "/orders", 200, `"orders"`},
		{"ok/decoy", "/api/members/" + strconv.FormatUint(decoy, 10) + "/profile", 200, `"name"`},
		{"fail/missing", "/api/members/" + strconv.FormatUint(missing, 10) + "/profile", 404, "not_found"},
		{"fail/above", "/api/members/" + strconv.FormatUint(testPop.IDSpace()+1, 10) + "/orders", 404, "not_found"},
		{"fail/zero", "/api/members/0/profile", 404, "not_found"},
		{"fail/leading-zero", "/api/members/0" + m + "/profile", 404, "not_found"},
		{"fail/not-number", "/api/members/abc/profile", 404, "not_found"},
		{"fail/edit-out-of-book", "/api/members/" + m + "/addresses/9/edit", 404, "not_found"},
		{"fail/edit-bad-index", "/api/members/" + m + "/addresses/-1/edit", 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.want) {
				t.Fatalf("status %d body %s", rec.Code, rec.Body)
			}
			if tt.status == 200 && !json.Valid(rec.Body.Bytes()) {
				t.Fatal("invalid JSON")
			}
		})
	}
	// Same member, same answer.
	a, b := httptest.NewRecorder(), httptest.NewRecorder()
	s.ServeHTTP(a, httptest.NewRequest(http.MethodGet, "/api/members/"+bb+"/addresses", nil))
	s.ServeHTTP(b, httptest.NewRequest(http.MethodGet, "/api/members/"+bb+"/addresses", nil))
	if a.Body.String() != b.Body.String() {
		t.Fatal("answers differ")
	}
	var got addressesAnswer
	if err := json.Unmarshal(a.Body.Bytes(), &got); err != nil || len(got.Addresses) != testPop.BookSize(bigBook) {
		t.Fatalf("addresses %+v err %v", got, err)
	}
}

func FuzzParseMember(f *testing.F) {
	for _, s := range []string{"1", "0", "007", "18446744073709551615", "18446744073709551616", "-1", "+1", "", "1e3", " 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := ParseMember(s)
		if ok && strconv.FormatUint(id, 10) != s {
			t.Fatalf("accepted non-canonical %q as %d", s, id)
		}
	})
}

func TestWalker(t *testing.T) {
	for _, p := range []Population{testPop, {Members: 1, Seed: 1}, {Members: 5, Missing: 7, Decoys: 7}, {Members: 9, Missing: 2}} {
		w := p.Walk()
		for i := uint64(0); i < 3*p.IDSpace()+2; i++ {
			id, k := w.Next()
			if want := i%p.IDSpace() + 1; id != want || k != p.Kind(id) {
				t.Fatalf("%+v step %d: got %d %v, want %d %v", p, i, id, k, want, p.Kind(want))
			}
		}
	}
}
