package shop

import (
	"github.com/custos-dev/custos/wire"
	"net/http"
	"strconv"
)

// Shop serves the four routes over HTTP for one population.
type Shop struct {
	pop Population
	mux *http.ServeMux
}

var _ http.Handler = (*Shop)(nil)

// New returns the sample shop for pop.
func New(pop Population) (*Shop, error) {
	if err := pop.Validate(); err != nil {
		return nil, err
	}
	s := &Shop{pop: pop, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET "+RouteProfile, s.profile)
	s.mux.HandleFunc("GET "+RouteAddresses, s.addresses)
	s.mux.HandleFunc("GET "+RouteAddressEdit, s.addressEdit)
	s.mux.HandleFunc("GET "+RouteOrders, s.orders)
	return s, nil
}

// Population returns the population the shop answers for.
func (s *Shop) Population() Population { return s.pop }

func (s *Shop) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

type profileAnswer struct {
	MemberID string `json:"member_id"`
	Name     string `json:"name"`
	Email    string `json:"email"`
}

type addressEntry struct {
	ID      int    `json:"id"`
	Name    string `json:"name"`
	Phone   string `json:"phone"`
	Address string `json:"address"`
}

type addressesAnswer struct {
	MemberID  string         `json:"member_id"`
	Addresses []addressEntry `json:"addresses"`
}

type editAnswer struct {
	MemberID     string `json:"member_id"`
	AddressID    int    `json:"address_id"`
	Name         string `json:"name"`
	Phone        string `json:"phone"`
	EntranceCode string `json:"entrance_code"`
}

type ordersAnswer struct {
	MemberID string  `json:"member_id"`
	Orders   []Order `json:"orders"`
}

func (s *Shop) member(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	id, ok := ParseMember(r.PathValue(SubjectParam))
	if !ok || !s.pop.Exists(id) {
		notFound(w)
		return 0, false
	}
	return id, true
}

func (s *Shop) profile(w http.ResponseWriter, r *http.Request) {
	id, ok := s.member(w, r)
	if !ok {
		return
	}
	p, _ := s.pop.Profile(id)
	wire.WriteJSON(w, http.StatusOK, profileAnswer{MemberID: strconv.FormatUint(id, 10), Name: p.Name, Email: p.Email})
}

func (s *Shop) addresses(w http.ResponseWriter, r *http.Request) {
	id, ok := s.member(w, r)
	if !ok {
		return
	}
	book, _ := s.pop.AddressBook(id)
	a := addressesAnswer{MemberID: strconv.FormatUint(id, 10), Addresses: make([]addressEntry, len(book))}
	for i, p := range book {
		a.Addresses[i] = addressEntry{ID: i, Name: p.Name, Phone: p.Phone, Address: p.Address}
	}
	wire.WriteJSON(w, http.StatusOK, a)
}

func (s *Shop) addressEdit(w http.ResponseWriter, r *http.Request) {
	id, ok := s.member(w, r)
	if !ok {
		return
	}
	addr, ok := ParseMember(r.PathValue("addr"))
	book, _ := s.pop.AddressBook(id)
	if !ok || addr >= uint64(len(book)) {
		notFound(w)
		return
	}
	p := book[addr]
	wire.WriteJSON(w, http.StatusOK, editAnswer{MemberID: strconv.FormatUint(id, 10), AddressID: int(addr), Name: p.Name, Phone: p.Phone, EntranceCode: p.EntranceCode})
}

func (s *Shop) orders(w http.ResponseWriter, r *http.Request) {
	id, ok := s.member(w, r)
	if !ok {
		return
	}
	o, _ := s.pop.Orders(id)
	wire.WriteJSON(w, http.StatusOK, ordersAnswer{MemberID: strconv.FormatUint(id, 10), Orders: o})
}

func notFound(w http.ResponseWriter) {
	wire.WriteError(w, http.StatusNotFound, "not_found", "no such member or address")
}
