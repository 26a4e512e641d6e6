package scenario

import "time"

// Historical is what was published about the breach (scenario file), for the
// report's column beside the simulated baseline. Where sources give a range,
// both ends are kept.
type Historical struct {
	Accounts           int64 `json:"accounts"`            // accounts disclosed
	ProfileRecordsMin  int64 `json:"profile_records_min"` // my-information edit page
	ProfileRecordsMax  int64 `json:"profile_records_max"`
	AddressListMin     int64 `json:"address_list_min"` // delivery address list accesses
	AddressListMax     int64 `json:"address_list_max"`
	AddressEdit        int64 `json:"address_edit"` // delivery address edit accesses
	Orders             int64 `json:"orders"`       // order history accesses
	Subjects           int64 `json:"subjects"`     // data subjects per the regulator
	Members            int64 `json:"members"`
	NonMembers         int64 `json:"non_members"`
	NonexistentTokens  int64 `json:"nonexistent_tokens"` // tokens minted for IDs that did not exist
	KeyValidityYearsLo int   `json:"key_validity_years_lo"`
	KeyValidityYearsHi int   `json:"key_validity_years_hi"`

	FirstForged     time.Time `json:"first_forged"`
	MassAccessStart time.Time `json:"mass_access_start"`
	AccessEnd       time.Time `json:"access_end"`     // "about"
	ExternalAlert   time.Time `json:"external_alert"` // customers receive the attacker's e-mails
	Awareness       time.Time `json:"awareness"`      // per the ministry
	OwnAwareness    time.Time `json:"own_awareness"`  // the company's own record
	KeyRevoked      time.Time `json:"key_revoked"`    // date only in the sources
	AgencyReport    time.Time `json:"agency_report"`
	Disclosure      time.Time `json:"disclosure"`
	ScopePublished  time.Time `json:"scope_published"` // investigation results
}

// History returns the published figures of the Coupang 2025 breach.
func History() Historical {
	return Historical{
		Accounts:           33_700_000,
		ProfileRecordsMin:  33_670_000,
		ProfileRecordsMax:  33_760_000,
		AddressListMin:     140_000_000,
		AddressListMax:     148_000_000,
		AddressEdit:        50_000,
		Orders:             100_000,
		Subjects:           37_550_000,
		Members:            33_220_000,
		NonMembers:         4_330_000,
		NonexistentTokens:  44_000_000,
		KeyValidityYearsLo: 5,
		KeyValidityYearsHi: 10,

		FirstForged:     kst(2025, time.April, 14, 0, 0),
		MassAccessStart: kst(2025, time.June, 24, 0, 0),
		AccessEnd:       kst(2025, time.November, 8, 0, 0),
		ExternalAlert:   kst(2025, time.November, 16, 0, 0),
		Awareness:       kst(2025, time.November, 17, 16, 0),
		OwnAwareness:    kst(2025, time.November, 18, 22, 52),
		KeyRevoked:      kst(2025, time.November, 19, 0, 0),
		AgencyReport:    kst(2025, time.November, 19, 21, 35),
		Disclosure:      kst(2025, time.November, 29, 0, 0),
		ScopePublished:  kst(2026, time.February, 10, 0, 0),
	}
}
