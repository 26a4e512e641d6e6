package console

import (
	"bytes"
	"context"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/custos-dev/custos/authority"
)

// MaxFormBytes bounds a console form body.
const MaxFormBytes = 16 << 10

type sessionKey struct{}

func sessionOf(ctx context.Context) Session {
	s, _ := ctx.Value(sessionKey{}).(Session)
	return s
}

// ServeHTTP serves the console under Prefix.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, MaxFormBytes)
	}
	c.mux.ServeHTTP(w, r)
}

func (c *Console) routes() *http.ServeMux {
	mux := http.NewServeMux()
	static := http.StripPrefix(Prefix+"/static/", http.FileServerFS(staticFiles()))
	mux.Handle("GET "+Prefix+"/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		static.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET "+Prefix+"/login", c.loginPage)
	mux.HandleFunc("POST "+Prefix+"/login", c.login)
	mux.HandleFunc("POST "+Prefix+"/logout", c.auth(c.logout))
	mux.HandleFunc("GET "+Prefix+"/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"/overview", http.StatusSeeOther)
	})
	mux.HandleFunc("GET "+Prefix, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"/overview", http.StatusSeeOther)
	})
	mux.HandleFunc("GET "+Prefix+"/overview", c.auth(c.overview))
	mux.HandleFunc("GET "+Prefix+"/keys", c.auth(c.keysPage))
	mux.HandleFunc("GET "+Prefix+"/keys/rotate", c.auth(c.rotateConfirm))
	mux.HandleFunc("POST "+Prefix+"/keys/rotate", c.auth(c.rotate))
	mux.HandleFunc("GET "+Prefix+"/keys/{kid}/revoke", c.auth(c.revokeConfirm))
	mux.HandleFunc("POST "+Prefix+"/keys/{kid}/revoke", c.auth(c.revoke))
	mux.HandleFunc("GET "+Prefix+"/staff", c.auth(c.staffPage))
	mux.HandleFunc("GET "+Prefix+"/alerts", c.auth(c.alertsPage))
	mux.HandleFunc("GET "+Prefix+"/alerts/stream", c.auth(c.alertStream))
	mux.HandleFunc("GET "+Prefix+"/alerts/{id}", c.auth(c.alertPage))
	mux.HandleFunc("GET "+Prefix+"/incidents", c.auth(c.incidentsPage))
	mux.HandleFunc("GET "+Prefix+"/incidents/{id}", c.auth(c.incidentPage))
	mux.HandleFunc("GET "+Prefix+"/incidents/{id}/scope", c.auth(c.scopeFragment))
	mux.HandleFunc("GET "+Prefix+"/incidents/{id}/notification.csv", c.auth(c.notificationCSV))
	mux.HandleFunc("GET "+Prefix+"/incidents/{id}/report.md", c.auth(c.reportMarkdown))
	return mux
}

// auth admits requests with a live session of a staff member who has not
// left (and, for POSTs, the session's CSRF token). Others are sent to the
// login page, or refused when they try to change something.
func (c *Console) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, ok := c.sessions.FromRequest(r)
		if ok {
			if err := c.cfg.Staff.CheckActor(r.Context(), sess.StaffID); err != nil {
				n := c.sessions.EndFor(sess.StaffID)
				c.log.Warn("console session of a departed or unknown staff member ended", "staff_id", sess.StaffID, "sessions", n, "err", err)
				ok = false
			} else if !c.credentialLive(r.Context(), sess.AdminID) {
				if ck, err := r.Cookie(SessionCookie); err == nil {
					c.sessions.End(ck.Value)
				}
				c.log.Warn("console session of a revoked admin credential ended", "staff_id", sess.StaffID, "credential", sess.AdminID)
				ok = false
			}
		}
		if !ok {
			if !safeMethod(r.Method) {
				http.Error(w, "forbidden: log in again (missing session or CSRF token)", http.StatusForbidden)
				return
			}
			to := Prefix + "/login?next=" + url.QueryEscape(r.URL.RequestURI())
			if r.Header.Get("HX-Request") != "" {
				w.Header().Set("HX-Redirect", to)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, to, http.StatusSeeOther)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
	}
}

// Login pages: a pre-session cookie and a matching form field (double
// submit) protect the login form itself from cross-site posts.
const loginCookie = "custos_login"

type loginView struct {
	Next, CSRF, Error string
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	tok := randomToken()
	setCookie(w, r, loginCookie, tok, 600)
	c.render(w, r, http.StatusOK, "login.html", "Log in", loginView{Next: safeNext(r.URL.Query().Get("next")), CSRF: tok})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	ck, err := r.Cookie(loginCookie)
	if err != nil || !CheckCSRF(r, ck.Value) {
		http.Error(w, "forbidden: reload the login page and try again", http.StatusForbidden)
		return
	}
	next := safeNext(r.PostFormValue("next"))
	fail := func(msg string) {
		tok := randomToken()
		setCookie(w, r, loginCookie, tok, 600)
		c.render(w, r, http.StatusUnauthorized, "login.html", "Log in", loginView{Next: next, CSRF: tok, Error: msg})
	}
	rec := map[string]string{"src": r.RemoteAddr, "user_agent": r.UserAgent()}
	if c.cfg.Proxies.Trusted(r.RemoteAddr) {
		rec["client_addr"] = c.cfg.Proxies.Source(r.RemoteAddr, r.Header).String()
	}
	a, err := c.cfg.Credentials.Admin(strings.TrimSpace(r.PostFormValue("token")))
	if err != nil {
		c.log.Warn("console login refused", "src", r.RemoteAddr, "client_addr", rec["client_addr"])
		fail("That is not a live admin credential.")
		return
	}
	if err := c.cfg.Staff.CheckActor(r.Context(), a.StaffID); err != nil {
		fail("This credential belongs to someone who has left.")
		return
	}
	rec["staff_id"], rec["admin_credential"] = a.StaffID, a.ID
	if err := c.cfg.Audit.Append(r.Context(), "console.login", rec); err != nil {
		c.log.Error("console login not recorded; refused", "err", err)
		http.Error(w, "the login could not be recorded in the audit log", http.StatusServiceUnavailable)
		return
	}
	id, _, err := c.sessions.Create(a.StaffID, a.ID)
	if err != nil {
		c.log.Error("console session not stored; login refused", "err", err)
		http.Error(w, "the session could not be stored", http.StatusServiceUnavailable)
		return
	}
	setCookie(w, r, loginCookie, "", -1)
	setCookie(w, r, SessionCookie, id, int(SessionMax/time.Second))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	sess := sessionOf(r.Context())
	if ck, err := r.Cookie(SessionCookie); err == nil {
		c.sessions.End(ck.Value)
	}
	if err := c.cfg.Audit.Append(r.Context(), "console.logout", map[string]string{"staff_id": sess.StaffID}); err != nil {
		c.log.Error("console logout not recorded", "err", err)
	}
	setCookie(w, r, SessionCookie, "", -1)
	http.Redirect(w, r, Prefix+"/login", http.StatusSeeOther)
}

// safeNext keeps post-login redirects inside the console.
func safeNext(n string) string {
	const home = Prefix + "/overview"
	if !strings.HasPrefix(n, Prefix+"/") || strings.Contains(n, "//") || strings.ContainsAny(n, "\\\r\n") {
		return home
	}
	if u, err := url.Parse(n); err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return home
	}
	return n
}

// view is what every page template receives.
type view struct {
	Title   string
	Page    string
	StaffID string
	CSRF    string
	Now     time.Time
	Data    any
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page, title string, data any) {
	sess := sessionOf(r.Context())
	v := view{Title: title, Page: strings.TrimSuffix(page, ".html"), StaffID: sess.StaffID, CSRF: sess.CSRF, Now: c.now(), Data: data}
	c.exec(w, status, page, "base", v)
}

// fragment renders one named template of page, for htmx swaps.
func (c *Console) fragment(w http.ResponseWriter, r *http.Request, page, name string, data any) {
	c.exec(w, http.StatusOK, page, name, data)
}

func (c *Console) exec(w http.ResponseWriter, status int, page, name string, data any) {
	t, ok := c.pages[page]
	if !ok {
		http.Error(w, "no such page", http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, name, data); err != nil {
		c.log.Error("console template failed", "page", page, "err", err)
		http.Error(w, "page failed to render", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, msg string, err error) {
	if err != nil {
		c.log.Error("console: "+msg, "err", err)
		msg = fmt.Sprintf("%s: %v", msg, err)
	}
	c.render(w, r, status, "error.html", "Error", msg)
}

func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		base := path.Base(n)
		if base == "base.html" || base == "parts.html" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/base.html", "templates/parts.html", n)
		if err != nil {
			return nil, fmt.Errorf("failed to parse %s: %w", n, err)
		}
		pages[base] = t
	}
	return pages, nil
}

// credentialChecker is the optional capability of Credentials to say whether
// the admin credential a session logged in with is still live.
type credentialChecker interface {
	Get(ctx context.Context, id string) (authority.Credential, error)
}

// credentialLive reports whether the admin credential id is live; without
// the capability every session's credential counts as live.
func (c *Console) credentialLive(ctx context.Context, id string) bool {
	cc, ok := c.cfg.Credentials.(credentialChecker)
	if !ok {
		return true
	}
	cr, err := cc.Get(ctx, id)
	return err == nil && cr.RevokedAt == nil
}
