package event

import (
	"encoding/json"
	"testing"
	"time"
)

func TestAccessOCSF(t *testing.T) {
	at := time.Date(2025, 6, 24, 3, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name           string
		e              Access
		activity       int
		status, detail string
	}{
		{"ok/get_allowed", Access{Time: at, Method: "GET", Verdict: Allow, Status: 200}, 3, "Success", ""},
		{"ok/lower_case_post", Access{Time: at, Method: "post", Verdict: Allow, Status: 201}, 6, "Success", ""},
		{"ok/patch_is_other", Access{Time: at, Method: "PATCH", Verdict: Allow}, 99, "Success", ""},
		{"ok/forged_token_refused", Access{Time: at, Method: "GET", Verdict: Deny, Reason: ReasonNotIssued, Status: 401,
			Token: Token{JTI: "j1", KID: "k1", Sub: "1001"}}, 3, "Failure", "not_issued"},
		{"ok/empty_method", Access{Time: at}, 99, "Success", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := json.Marshal(c.e.OCSF())
			if err != nil {
				t.Fatal(err)
			}
			var o struct {
				Class    int    `json:"class_uid"`
				Category int    `json:"category_uid"`
				Activity int    `json:"activity_id"`
				Type     int    `json:"type_uid"`
				Time     int64  `json:"time"`
				Status   string `json:"status"`
				Detail   string `json:"status_detail"`
				Actor    *struct {
					User struct{ UID string } `json:"user"`
				} `json:"actor"`
			}
			if err := json.Unmarshal(b, &o); err != nil {
				t.Fatal(err)
			}
			if o.Class != 4002 || o.Category != 4 || o.Activity != c.activity || o.Type != 400200+c.activity || o.Time != at.UnixMilli() {
				t.Fatalf("%s", b)
			}
			if o.Status != c.status || o.Detail != c.detail {
				t.Fatalf("status %q detail %q", o.Status, o.Detail)
			}
			if c.e.Token.Sub != "" && (o.Actor == nil || o.Actor.User.UID != c.e.Token.Sub) {
				t.Fatalf("actor %s", b)
			}
		})
	}
}
