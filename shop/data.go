package shop

import (
	"strconv"
	"strings"
)

// Hash tags keep the generated fields independent of each other.
const (
	tagPerson uint64 = iota + 1
	tagBook
	tagOrders
	tagDecoy
)

func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func (p Population) hash(tag, a, b uint64) uint64 {
	return mix(mix(mix(p.Seed^(tag*0x9e3779b97f4a7c15))+a) + b)
}

// Person is the personal data the shop holds on one data subject.
type Person struct {
	Name         string `json:"name"`
	Email        string `json:"email,omitempty"`
	Phone        string `json:"phone"`
	Address      string `json:"address"`
	EntranceCode string `json:"entrance_code"`
}

type syllable struct{ hangul, latin string }

var (
	surnames = []syllable{ // weighted by repetition, roughly the national distribution
		{"김", "kim"}, {"김", "kim"}, {"김", "kim"}, {"김", "kim"}, {"이", "lee"}, {"이", "lee"}, {"이", "lee"},
		{"박", "park"}, {"박", "park"}, {"최", "choi"}, {"정", "jung"}, {"강", "kang"}, {"조", "cho"},
		{"윤", "yoon"}, {"장", "jang"}, {"임", "lim"}, {"한", "han"}, {"오", "oh"}, {"서", "seo"}, {"신", "shin"},
	}
	given = []syllable{
		{"민", "min"}, {"준", "jun"}, {"서", "seo"}, {"연", "yeon"}, {"지", "ji"}, {"우", "woo"}, {"현", "hyun"},
		{"수", "su"}, {"예", "ye"}, {"은", "eun"}, {"하", "ha"}, {"윤", "yun"}, {"도", "do"}, {"영", "young"},
		{"재", "jae"}, {"성", "sung"}, {"혜", "hye"}, {"진", "jin"}, {"아", "a"}, {"호", "ho"},
	}
	cities = []struct{ city, districts string }{
		{"서울특별시", "강남구,송파구,마포구,관악구,노원구,서초구,영등포구"},
		{"부산광역시", "해운대구,부산진구,동래구,사하구"},
		{"인천광역시", "연수구,남동구,부평구"},
		{"대구광역시", "수성구,달서구,북구"},
		{"경기도", "성남시 분당구,수원시 영통구,고양시 일산동구,용인시 수지구,화성시"},
		{"대전광역시", "유성구,서구"},
		{"광주광역시", "북구,서구"},
	}
	roads       = []string{"테헤란로", "올림픽로", "중앙로", "해운대로", "세종대로", "판교역로", "월드컵로", "동탄대로", "광복로", "국채보상로"}
	mailDomains = []string{"example.com", "example.net", "example.org", "mail.example", "inbox.example"}
	items       = []string{"생수 2L x 12", "무선 이어폰", "기저귀 대형 64매", "커피 캡슐 100개", "운동화", "견과류 믹스", "세탁 세제 3L", "노트북 파우치", "전기 포트", "유아 물티슈 10팩", "냉동 만두 1kg", "휴대폰 충전기"}
)

func pick[T any](xs []T, h uint64) T { return xs[h%uint64(len(xs))] }

func pad(b *strings.Builder, v uint64, width int) {
	s := strconv.FormatUint(v, 10)
	for i := len(s); i < width; i++ {
		b.WriteByte('0')
	}
	b.WriteString(s)
}

// person derives one data subject's record from its key: (id, 0) for a member
// or decoy, (owner, k) for the owner's k-th non-member recipient.
func (p Population) person(a, b uint64, withEmail bool) Person {
	h := p.hash(tagPerson, a, b)
	h2 := mix(h)
	h3 := mix(h2)
	sur, g1, g2 := pick(surnames, h), pick(given, h>>8), pick(given, h>>16)
	var r Person
	r.Name = sur.hangul + g1.hangul + g2.hangul
	var sb strings.Builder
	if withEmail {
		sb.WriteString(g1.latin)
		sb.WriteString(g2.latin)
		sb.WriteByte('.')
		sb.WriteString(sur.latin)
		sb.WriteString(strconv.FormatUint(h>>24%100, 10))
		sb.WriteByte('@')
		sb.WriteString(pick(mailDomains, h>>32))
		r.Email = sb.String()
		sb.Reset()
	}
	sb.WriteString("010-")
	pad(&sb, h2%10000, 4)
	sb.WriteByte('-')
	pad(&sb, (h2>>16)%10000, 4)
	r.Phone = sb.String()
	sb.Reset()
	c := pick(cities, h2>>32)
	ds := strings.Split(c.districts, ",")
	sb.WriteString(c.city)
	sb.WriteByte(' ')
	sb.WriteString(pick(ds, h2>>40))
	sb.WriteByte(' ')
	sb.WriteString(pick(roads, h3))
	sb.WriteByte(' ')
	sb.WriteString(strconv.FormatUint(1+h3>>8%400, 10))
	sb.WriteString(", ")
	sb.WriteString(strconv.FormatUint(101+h3>>20%15, 10))
	sb.WriteString("동 ")
	sb.WriteString(strconv.FormatUint(1+h3>>28%25, 10))
	pad(&sb, 1+h3>>36%8, 2)
	sb.WriteString("호")
	r.Address = sb.String()
	sb.Reset()
	sb.WriteByte('#')
	pad(&sb, h3>>44%10000, 4)
	if h3>>60&1 == 1 {
		sb.WriteByte('*')
	}
	r.EntranceCode = sb.String()
	return r
}

// Non-member recipients per address book: 1 with probability 8.849 %, 2 with
// 2 %, so 0.12849 per member on average: 4.33 million among 33.7 million
// members, as in the regulator's count of data subjects.
const (
	nonMemberOne = 88_490
	nonMemberTwo = 108_490
	nonMemberDen = 1_000_000
	// otherMemberPct of address books also list another member (family).
	otherMemberPct = 15
)

// MaxNonMembers bounds the non-member recipients of one address book, so
// (owner, k) with 1 <= k <= MaxNonMembers indexes every non-member.
const MaxNonMembers = 2

// Shape returns the layout of id's address book without building it: the
// other member listed (0 if none) and the number of non-member recipients.
// Entry 0 is the holder, then the other member if any, then the non-members.
// A decoy's or missing ID's book has no other entries.
func (p Population) Shape(id uint64) (other uint64, nonMembers int) {
	if p.Kind(id) != Member {
		return 0, 0
	}
	h := p.hash(tagBook, id, 0)
	switch u := h % nonMemberDen; {
	case u < nonMemberOne:
		nonMembers = 1
	case u < nonMemberTwo:
		nonMembers = 2
	}
	if (h>>20)%100 < otherMemberPct && p.Members > 1 {
		other = p.MemberID(1 + (h>>27)%p.Members)
		if other == id {
			other = 0
		}
	}
	return other, nonMembers
}

// NonMembers returns how many non-member recipients are in id's address book.
func (p Population) NonMembers(id uint64) int {
	_, nm := p.Shape(id)
	return nm
}

// BookSize returns the number of entries in id's address book (0 if the ID
// does not exist). Entry 0 is the account holder.
func (p Population) BookSize(id uint64) int {
	if !p.Exists(id) {
		return 0
	}
	other, nm := p.Shape(id)
	n := 1 + nm
	if other != 0 {
		n++
	}
	return n
}

// NonMemberSubject is the subject ID of owner's k-th non-member recipient (k >= 1).
func NonMemberSubject(owner uint64, k int) string {
	return NonMemberPrefix + strconv.FormatUint(owner, 10) + "-" + strconv.Itoa(k)
}

// Recipients returns the data subjects in id's address book, in entry order:
// the holder's ID, another member's ID if listed, then non-members
// ("nm-<id>-<k>"). A decoy's book lists only itself; a missing ID has none.
func (p Population) Recipients(id uint64) []string {
	if !p.Exists(id) {
		return nil
	}
	other, nm := p.Shape(id)
	out := make([]string, 0, 1+nm+1)
	out = append(out, strconv.FormatUint(id, 10))
	if other != 0 {
		out = append(out, strconv.FormatUint(other, 10))
	}
	for k := 1; k <= nm; k++ {
		out = append(out, NonMemberSubject(id, k))
	}
	return out
}

// Profile returns the my-information data of an existing ID.
func (p Population) Profile(id uint64) (Person, bool) {
	if !p.Exists(id) {
		return Person{}, false
	}
	return p.person(id, 0, true), true
}

// AddressBook returns the recipients' records of id's address book, in the
// order of [Population.Recipients].
func (p Population) AddressBook(id uint64) ([]Person, bool) {
	if !p.Exists(id) {
		return nil, false
	}
	other, nm := p.Shape(id)
	out := make([]Person, 0, 2+nm)
	self := p.person(id, 0, false)
	out = append(out, self)
	if other != 0 {
		o := p.person(other, 0, false)
		o.Address, o.EntranceCode = self.Address, self.EntranceCode // lives with the holder
		out = append(out, o)
	}
	for k := 1; k <= nm; k++ {
		out = append(out, p.person(id, uint64(k), false))
	}
	return out, true
}

// Order is one entry of an order history.
type Order struct {
	OrderID   string `json:"order_id"`
	Date      string `json:"date"`
	Item      string `json:"item"`
	AmountKRW uint64 `json:"amount_krw"`
}

// Orders returns the recent order history of an existing ID (up to 8 orders).
func (p Population) Orders(id uint64) ([]Order, bool) {
	if !p.Exists(id) {
		return nil, false
	}
	h := p.hash(tagOrders, id, 0)
	n := int(h % 9)
	out := make([]Order, n)
	day := 300 + h>>8%60 // days since 2024-10-01, then going back
	for i := range out {
		hi := mix(h + uint64(i))
		if day > hi%20 {
			day -= hi % 20
		}
		y, m, d := civil(day)
		out[i] = Order{
			OrderID:   strconv.FormatUint(hi>>16%9_000_000_000+1_000_000_000, 10),
			Date:      strconv.Itoa(y) + "-" + two(m) + "-" + two(d),
			Item:      pick(items, hi>>48),
			AmountKRW: (hi>>8%2000 + 5) * 100,
		}
	}
	return out, true
}

func two(v int) string {
	if v < 10 {
		return "0" + strconv.Itoa(v)
	}
	return strconv.Itoa(v)
}

// civil turns a day offset from 2024-10-01 into a date (no clock involved).
func civil(off uint64) (y, m, d int) {
	days := []int{31, 30, 31, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, 28} // Oct 2024 ..
	y, m, d = 2024, 10, 1+int(off)
	for i := 0; i < len(days) && d > days[i]; i++ {
		d -= days[i]
		m++
		if m > 12 {
			m, y = 1, y+1
		}
	}
	return y, m, d
}
