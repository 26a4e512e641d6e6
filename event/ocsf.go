package event

import "strings"

// ocsfMethod maps an HTTP method to the activity_id of OCSF 1.3 HTTP Activity.
var ocsfMethod = map[string]int{
	"CONNECT": 1, "DELETE": 2, "GET": 3, "HEAD": 4, "OPTIONS": 5, "POST": 6, "PUT": 7, "TRACE": 8,
}

// OCSF returns the access event as an OCSF 1.3 HTTP Activity (class_uid
// 4002). A refusal is status Failure with the reason as status_detail and
// disposition Blocked; the token's claims go to the actor's session and
// user, never the token itself (the event does not carry it).
func (e Access) OCSF() map[string]any {
	m := strings.ToUpper(e.Method)
	act, ok := ocsfMethod[m]
	name := strings.ToUpper(m[:min(1, len(m))]) + strings.ToLower(m[min(1, len(m)):])
	if !ok {
		act, name = 99, m
	}
	status, statusID, disp, dispID := "Success", 1, "Allowed", 1
	sev, sevID := "Informational", 1
	if e.Verdict == Deny {
		status, statusID, disp, dispID = "Failure", 2, "Blocked", 2
		sev, sevID = "Low", 2
	}
	out := map[string]any{
		"category_uid":   4,
		"category_name":  "Network Activity",
		"class_uid":      4002,
		"class_name":     "HTTP Activity",
		"activity_id":    act,
		"activity_name":  name,
		"type_uid":       400200 + act,
		"time":           e.Time.UnixMilli(),
		"severity_id":    sevID,
		"severity":       sev,
		"status_id":      statusID,
		"status":         status,
		"disposition_id": dispID,
		"disposition":    disp,
		"metadata": map[string]any{
			"version": "1.3.0",
			"uid":     e.RequestID,
			"product": map[string]any{"name": "custos", "vendor_name": "custos", "feature": map[string]any{"name": e.Gateway}},
		},
		"http_request": map[string]any{
			"http_method": m,
			"user_agent":  e.UserAgent,
			"uid":         e.RequestID,
			"url":         map[string]any{"path": e.Path},
		},
		"http_response": map[string]any{"code": e.Status, "length": e.Bytes},
		"src_endpoint":  srcEndpoint(e),
		"duration":      e.LatencyUS / 1000,
		"unmapped": map[string]any{
			"route":        e.Route,
			"subject":      e.Subject,
			"data_classes": e.DataClasses,
			"latency_us":   e.LatencyUS,
			"reported":     e.Reported,
			"kid":          e.Token.KID,
		},
	}
	if e.Reason != ReasonNone {
		out["status_detail"] = string(e.Reason)
	}
	if e.Token.JTI != "" || e.Token.Sub != "" || e.Token.KID != "" {
		out["actor"] = map[string]any{
			"user":     map[string]any{"uid": e.Token.Sub},
			"session":  map[string]any{"uid": e.Token.JTI, "created_time": e.Token.IAT * 1000, "expiration_time": e.Token.EXP * 1000},
			"app_name": e.Token.Aud,
		}
	}
	return out
}

func srcEndpoint(e Access) map[string]any {
	s := map[string]any{"ip": e.SrcIP}
	if e.Country != "" {
		s["location"] = map[string]any{"country": e.Country}
	}
	if e.ASN != 0 {
		s["autonomous_system"] = map[string]any{"number": e.ASN}
	}
	return s
}
