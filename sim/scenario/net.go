package scenario

import "net/netip"

// Network is one address block the scenario sends from, with the country and
// autonomous system a GeoIP lookup would give. The blocks are a synthetic
// allocation for the replay, not a geolocation source.
type Network struct {
	Prefix   netip.Prefix `json:"prefix"`
	Country  string       `json:"country"`
	ASN      uint32       `json:"asn"`
	Attacker bool         `json:"attacker"`
}

type block struct {
	a, b    byte // first two octets of a /16
	country string
	asn     uint32
	mobile  bool
}

// Overseas hosting and cloud networks the crawler rents (never KR).
var attackerNets = []block{
	{18, 204, "US", 16509, false}, {159, 65, "US", 14061, false}, {13, 212, "SG", 16509, false},
	{128, 199, "SG", 14061, false}, {47, 242, "HK", 45102, false}, {45, 76, "JP", 20473, false},
	{116, 202, "DE", 24940, false}, {188, 166, "NL", 14061, false}, {47, 100, "CN", 45102, false},
	{51, 77, "FR", 16276, false},
}

// Domestic fixed-line and mobile networks of the shop's customers.
var domesticNets = []block{
	{175, 192, "KR", 4766, false}, {121, 128, "KR", 4766, false}, {14, 32, "KR", 4766, false},
	{218, 48, "KR", 9318, false}, {1, 224, "KR", 9318, false}, {125, 176, "KR", 3786, false},
	{223, 38, "KR", 9644, true}, {106, 101, "KR", 17858, true}, {39, 7, "KR", 4766, true},
}

var domesticFixed, domesticMobile = func() (f, m []block) {
	for _, b := range domesticNets {
		if b.mobile {
			m = append(m, b)
		} else {
			f = append(f, b)
		}
	}
	return f, m
}()

// attacker24 returns the j-th /24 of the crawler's rotation.
func attacker24(j int) (netip.Addr, block) {
	b := attackerNets[j%len(attackerNets)]
	third := byte((j/len(attackerNets))*37 + int(b.b)*11)
	return netip.AddrFrom4([4]byte{b.a, b.b, third, 0}), b
}

var crawlerUAs = []string{
	"python-requests/2.31.0",
	"Scrapy/2.11.2 (+https://scrapy.org)",
	"Go-http-client/1.1",
	"curl/8.5.0",
	"okhttp/4.12.0",
	"python-httpx/0.27.0",
	"aiohttp/3.9.5 Python/3.11",
	"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36",
}

var testUAs = []string{"curl/8.5.0", "python-requests/2.31.0", "PostmanRuntime/7.37.3"}

var mobileUAs = []string{
	"ShopApp/8.14.0 (iPhone15,2; iOS 17.5.1; ko-KR)",
	"ShopApp/8.14.0 (Android 14; SM-S918N; ko-KR)",
	"ShopApp/8.13.2 (Android 13; SM-A536N; ko-KR)",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
	"Mozilla/5.0 (Linux; Android 14; SM-S918N) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
	"Mozilla/5.0 (Linux; Android 14; SM-S918N) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Mobile Safari/537.36",
}

var desktopUAs = []string{
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36",
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36 Edg/125.0.0.0",
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Whale/3.26.244.21 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0",
}
