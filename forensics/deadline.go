package forensics

import "time"

// Deadline is one legal clock that starts when the controller becomes aware
// of a breach.
type Deadline struct {
	Name string    `json:"name"`
	Law  string    `json:"law"`
	Due  time.Time `json:"due"`
	// Remaining is Due minus now; negative once the deadline has passed.
	Remaining time.Duration `json:"remaining"`
	Overdue   bool          `json:"overdue"`
}

// deadlineRules are the clocks a Korean online shop with EU customers runs.
var deadlineRules = []struct {
	name, law string
	after     time.Duration
}{
	{"Report to KISA / Ministry of Science and ICT", "Network Act art. 48-3 (Korea): infringement incident, within 24 hours", 24 * time.Hour},
	{"Notify the data subjects", "PIPA art. 34(1) (Korea): within 72 hours", 72 * time.Hour},
	{"Report to the PIPC", "PIPA art. 34(3) (Korea): within 72 hours (1,000 or more subjects, or sensitive data)", 72 * time.Hour},
	{"Notify the supervisory authority", "GDPR art. 33: within 72 hours", 72 * time.Hour},
}

// Deadlines returns the legal clocks running from awareness, as seen at now,
// earliest first.
func Deadlines(awareness, now time.Time) []Deadline {
	out := make([]Deadline, len(deadlineRules))
	for i, r := range deadlineRules {
		due := awareness.Add(r.after)
		out[i] = Deadline{Name: r.name, Law: r.law, Due: due, Remaining: due.Sub(now), Overdue: now.After(due)}
	}
	return out
}
