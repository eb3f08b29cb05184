// Package web is Sortie's web UI, served by `sortie serve` at "/": the
// status of the pipelines, buildsets with their job graph and timeline,
// build logs followed live, history and job pages.
//
// Every page is rendered on the server with html/template (the graph, the
// timeline and the charts as inline SVG) and is readable without
// JavaScript. Small ES modules under /static/ add the live parts: they poll
// the JSON API or follow a log's Server-Sent Events and patch the page in
// place. Templates, CSS and scripts are embedded in the binary; there is no
// build step.
package web

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/server"
	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Source is what the pages read: *server.Server implements it.
type Source interface {
	Config() *config.Config
	Status(ctx context.Context) (*server.StatusJSON, error)
	Nodes(ctx context.Context) (*server.NodesJSON, error)
	Buildset(ctx context.Context, id string) (*server.BuildsetJSON, error)
	Build(ctx context.Context, id, job string) (*server.BuildJSON, error)
	History(ctx context.Context, q server.HistoryQuery) (*server.HistoryPage, error)
	JobHistory(ctx context.Context, job string, limit int) ([]server.HistoryRow, error)
	JobMedian(ctx context.Context, job string) (time.Duration, bool, error)
	LogTail(ctx context.Context, id, job string, attempt int, tail int64) (*server.LogTail, error)
	LogLines(ctx context.Context, id, job string, n int) ([]string, int, error)
	JobMedians(ctx context.Context, jobs []string) (map[string]time.Duration, error)
	Commits(ctx context.Context, shas []string) (map[string]source.Commit, error)
	Reports(ctx context.Context, id string) ([]server.ReportJSON, error)
}

// Handler serves the pages and their static files.
type Handler struct {
	src   Source
	mux   *http.ServeMux
	pages map[string]*template.Template
	// static maps a file's name under /static/ to its content and hash.
	static map[string]staticFile
	// Now is the clock of the pages (running durations); tests set it.
	Now func() time.Time
	// PageSize is how many buildsets a history page lists.
	PageSize int
	// Log gets the errors of rendering; nil means slog.Default().
	Log *slog.Logger

	subjectCache subjectCache
}

type staticFile struct {
	data []byte
	hash string
}

// New makes the UI's handler over src; mount it with server.SetUI.
func New(src Source) *Handler {
	h := &Handler{src: src, mux: http.NewServeMux(), pages: map[string]*template.Template{}, static: map[string]staticFile{}, Now: time.Now, PageSize: 50}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		h.static[strings.TrimPrefix(p, "static/")] = staticFile{data: data, hash: hex.EncodeToString(sum[:6])}
		return nil
	})
	if err != nil {
		panic(err) // the embedded files are part of the binary
	}
	funcs := template.FuncMap{
		"asset":       h.asset,
		"short":       shortCommit,
		"ts":          fmtTime,
		"tsp":         fmtTimePtr,
		"iso":         isoTime,
		"isoms":       isoMilli,
		"stateClass":  stateClass,
		"reasonText":  reasonText,
		"splitHolder": splitHolder,
		"shortID":     shortID,
		"bstate":      buildState,
		"linked":      func(s string) template.HTML { return linkIDs(s, nil) },
	}
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/hosts.html"))
	entries, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		name := path.Base(e)
		if name == "layout.html" || name == "hosts.html" {
			continue
		}
		h.pages[strings.TrimSuffix(name, ".html")] = template.Must(template.Must(base.Clone()).ParseFS(templateFS, e))
	}

	h.mux.HandleFunc("GET /{$}", h.status)
	h.mux.HandleFunc("GET /buildsets/{id}", h.buildset)
	h.mux.HandleFunc("GET /buildsets/{id}/builds/{job}", h.build)
	h.mux.HandleFunc("GET /buildsets", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/history", http.StatusFound)
	})
	h.mux.HandleFunc("GET /history", h.history)
	h.mux.HandleFunc("GET /jobs/{name}", h.job)
	h.mux.HandleFunc("GET /static/{file...}", h.serveStatic)
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			// An API client gets the API's kind of answer.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]string{"error": "no API endpoint " + r.Method + " " + r.URL.Path + " (docs/api.md)"})
			return
		}
		h.notFound(w, r, "There is no page at "+r.URL.Path+".")
	})
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "same-origin")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) log() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.Default()
}

// asset is the URL of a static file, with its hash so that it can be
// cached for good.
func (h *Handler) asset(name string) string {
	f, ok := h.static[name]
	if !ok {
		panic("web: no static file " + name)
	}
	return "/static/" + name + "?v=" + f.hash
}

func (h *Handler) serveStatic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	f, ok := h.static[name]
	if !ok {
		h.notFound(w, r, "There is no file "+name+".")
		return
	}
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	if r.URL.Query().Get("v") == f.hash {
		// The URL names this content: it never changes.
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		// Module imports name files without the hash: revalidate.
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("ETag", `"`+f.hash+`"`)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.data))
}

// Page is what the layout needs of every page.
type Page struct {
	Title string
	// MainID is the id of the page's <main> (the skip link's target).
	MainID string
	// Nav is the current item of the navigation: "status" or "history".
	Nav string
	// Script is the page's module under /static/, if it has one.
	Script string
	// BodyClass sets the page's style.
	BodyClass string
}

// render writes a page, compressed when the client takes gzip.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, code int, name string, data any) {
	var buf bytes.Buffer
	if err := h.pages[name].ExecuteTemplate(&buf, "layout.html", data); err != nil {
		h.log().Error("web: render", "page", name, "err", err)
		http.Error(w, "rendering the page failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Add("Vary", "Accept-Encoding")
	if buf.Len() > 8<<10 && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		hd.Set("Content-Encoding", "gzip")
		w.WriteHeader(code)
		zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
		io.Copy(zw, &buf)
		zw.Close()
		return
	}
	hd.Set("Content-Length", fmt.Sprint(buf.Len()))
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

type errorPage struct {
	Page
	Message string
}

func (h *Handler) notFound(w http.ResponseWriter, r *http.Request, msg string) {
	h.render(w, r, http.StatusNotFound, "error", &errorPage{Page: Page{Title: "Not found", MainID: "main"}, Message: msg})
}

// fail answers a read that failed: a 404 page for what does not exist.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error, what string) {
	if errors.Is(err, store.ErrNotFound) {
		h.notFound(w, r, "There is no "+what+".")
		return
	}
	h.log().Error("web: read", "path", r.URL.Path, "err", err)
	h.render(w, r, http.StatusInternalServerError, "error", &errorPage{Page: Page{Title: "Error", MainID: "main"}, Message: err.Error()})
}
