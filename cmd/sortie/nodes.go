package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sortie-ci/sortie/internal/coordinator"
	"github.com/sortie-ci/sortie/internal/server"
)

func cmdNodes(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("nodes", "[--json] [--server URL]", stderr)
	srv := serverFlag(fs)
	asJSON := fs.Bool("json", false, "print the server's JSON (GET /api/v1/nodes)")
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := newAPIClient(*srv)
	if err != nil {
		return err
	}
	var ns server.NodesJSON
	data, err := c.call(ctx, http.MethodGet, "/api/v1/nodes", nil, &ns)
	if err != nil {
		return clientErr(err)
	}
	if *asJSON {
		_, err := stdout.Write(data)
		return err
	}
	_, err = io.WriteString(stdout, nodesTable(&ns, time.Now()))
	return err
}

// nodesTable renders the nodes for people, one a line, the leader marked
// and a config that differs flagged.
func nodesTable(ns *server.NodesJSON, now time.Time) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tLEADER\tHOST\tLAST RENEWAL\tSLOTS\tVERSION\tCONFIG")
	differ := 0
	for _, n := range ns.Nodes {
		name := n.Name
		if n.Self {
			name += " (this)"
		}
		leader := "-"
		if n.Leader {
			leader = fmt.Sprintf("term %d", n.LeaderTerm)
		}
		renewal := "-"
		if !n.LastRenewal.IsZero() {
			renewal = fmt.Sprintf("%s ago", now.Sub(n.LastRenewal).Round(time.Second))
		}
		fp := shortFP(n.ConfigFingerprint)
		if n.ConfigDiffers {
			fp += " DIFFERS"
			differ++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", name, n.State, leader, n.Host, renewal,
			n.SlotsInUse, n.SlotsMax, cmpDash(n.Version), fp)
	}
	tw.Flush()
	if len(ns.Nodes) == 0 {
		b.WriteString("(no node)\n")
	}
	if ns.Leader == nil {
		b.WriteString("no node leads now: cron, polling and admission wait for an election\n")
	}
	if differ > 0 {
		fmt.Fprintf(&b, "%d node(s) run a config that differs from the %s's: reload them with the same config\n", differ, strings.Replace(ns.ConfigReference, "self", "this node", 1))
	}
	return b.String()
}

func shortFP(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}
	return cmpDash(fp)
}

func cmpDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cmdNode runs the node subcommands: forget.
func cmdNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "forget" {
		return usageError("node: say what to do: sortie node forget NAME [--force]")
	}
	fs := newFlags("node forget", "NAME [--force] [--server URL]", stderr)
	srv := serverFlag(fs)
	force := fs.Bool("force", false, "forget the node even though it still renews its lease")
	pos, err := parseInterspersed(fs, args[1:], 1, 1, "NAME")
	if err != nil {
		return err
	}
	c, err := newAPIClient(*srv)
	if err != nil {
		return err
	}
	name := pos[0]
	var f coordinator.Forgotten
	_, err = c.call(ctx, http.MethodPost, "/api/v1/nodes/"+url.PathEscape(name)+"/forget",
		map[string]any{"by": cliWho(), "force": *force}, &f)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.status == http.StatusConflict && strings.Contains(ae.msg, coordinator.ErrNodeLive.Error()) {
			ae.msg += " (with --force the node is forgotten anyway: only when its processes are gone)"
		}
		return clientErr(err)
	}
	_, err = io.WriteString(stdout, forgottenText(&f))
	return err
}

// forgottenText says what a forget freed.
func forgottenText(f *coordinator.Forgotten) string {
	var b strings.Builder
	fmt.Fprintf(&b, "forgot node %s:", f.Node)
	for _, o := range f.Owners {
		fmt.Fprintf(&b, " owner %s (%s, host %s)", o.ID, o.State, cmpDash(o.Host))
	}
	b.WriteString("\n")
	if len(f.Buildsets) == 0 {
		b.WriteString("  it owned no unfinished buildset\n")
	} else {
		fmt.Fprintf(&b, "  buildsets adopted by the server asked: %s\n", strings.Join(f.Buildsets, ", "))
	}
	if len(f.Holders) == 0 {
		b.WriteString("  it held no semaphore\n")
	}
	for _, h := range f.Holders {
		fmt.Fprintf(&b, "  freed semaphore %s (held by %s of buildset %s)\n", h.Semaphore, h.Holder, h.Buildset)
	}
	for _, w := range f.Waiters {
		fmt.Fprintf(&b, "  dropped its wait for semaphore %s (%s of buildset %s)\n", w.Semaphore, w.Holder, w.Buildset)
	}
	return b.String()
}
