package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/source"
)

func cmdValidate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("validate", "--config PATH [--effective] [--source DIR]", stderr)
	path := fs.String("config", "", "config file, or directory of *.yaml files")
	effective := fs.Bool("effective", false, "print every job as it runs, after inheritance (extends), as YAML")
	src := fs.String("source", "", "a clone of the deployed repository: warn about file matchers that match none of the files of its HEAD (default: source.url at source.branch, when it is a local path)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	if *effective {
		_, err := stdout.Write(cfg.Effective())
		return err
	}
	if err := warnDeadMatchers(ctx, cfg, *src, stderr); err != nil {
		return err
	}
	// A pipeline whose jobs need a job it does not run cannot make any
	// buildset that selects them: worth a warning before the first one fails.
	for _, name := range cfg.PipelineOrder {
		if _, err := graph.Select(cfg, name, nil); err != nil {
			fmt.Fprintf(stderr, "warning: pipeline %s (%s): %v; every buildset that selects it will fail with CONFIG_ERROR\n", name, cfg.Pipelines[name].Pos, err)
		}
	}
	jobs := plural(len(cfg.Jobs), "job", "jobs")
	abstract := 0
	for _, j := range cfg.Jobs {
		if j.Abstract {
			abstract++
		}
	}
	if abstract > 0 {
		jobs += fmt.Sprintf(" (%d abstract)", abstract)
	}
	fmt.Fprintf(stdout, "%s: ok: %s, %s, %s; bootstrap job %s\n", *path,
		jobs, plural(len(cfg.Pipelines), "pipeline", "pipelines"),
		plural(len(cfg.Semaphores), "semaphore", "semaphores"), cfg.Bootstrap)
	return nil
}

// warnDeadMatchers warns about every file matcher that matches no file of
// the deployed repository, when one is at hand: dir (--source, at its
// HEAD), else source.url at source.branch when it is a local path. A
// remote source.url is not fetched: validate stays offline. A --source
// that is no repository is bad usage.
func warnDeadMatchers(ctx context.Context, cfg *config.Config, dir string, stderr io.Writer) error {
	repo, rev, named := dir, "HEAD", dir
	if dir == "" {
		if !filepath.IsAbs(cfg.Source.URL) {
			return nil
		}
		repo, named = cfg.Source.URL, cfg.Source.URL+" (source.url)"
		if cfg.Source.Branch != "" {
			rev = cfg.Source.Branch
		}
	}
	sha, err := source.Git(ctx, "-C", repo, "rev-parse", "--verify", "--quiet", rev+"^{commit}")
	if err != nil {
		if dir != "" {
			return usageError("validate: --source %s: no git repository with a commit at %s there", dir, rev)
		}
		return nil
	}
	out, err := source.Git(ctx, "-C", repo, "ls-tree", "-r", "--name-only", "-z", strings.TrimSpace(string(sha)))
	if err != nil {
		return fmt.Errorf("validate: list the files of %s: %w", named, err)
	}
	paths := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	for _, w := range cfg.DeadMatchers(paths, named+" at "+rev) {
		fmt.Fprintf(stderr, "warning: %v\n", w)
	}
	return nil
}

func cmdPlan(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("plan", "--config PATH --pipeline NAME [--files F ...] [--format text|json]", stderr)
	path := fs.String("config", "", "config file, or directory of *.yaml files")
	pipeline := fs.String("pipeline", "", "pipeline to plan")
	format := fs.String("format", "text", "output format: text or json")
	var files filesFlag
	fs.Var(&files, "files", "changed files (repeat, or separate with commas); none means every job")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return usageError("plan: --format must be text or json (got %q)", *format)
	}
	if *pipeline == "" {
		return usageError("plan: --pipeline is required")
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	changed := files.files
	if files.set && changed == nil {
		changed = []string{} // --files "": an empty list, said so in the why
	}
	plan, err := planFor(cfg, *pipeline, changed)
	if err != nil {
		if *format == "json" {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			enc.Encode(map[string]string{"error": err.Error()})
		}
		return &exitError{code: 2, msg: err.Error()}
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(plan)
	}
	writePlanText(stdout, cfg, plan, changed)
	return nil
}

// planFor selects the jobs of a buildset, naming the known pipelines when
// the one asked for does not exist.
func planFor(cfg *config.Config, pipeline string, files []string) (*graph.Plan, error) {
	plan, err := graph.Select(cfg, pipeline, files)
	var up *graph.UnknownPipelineError
	if errors.As(err, &up) {
		return nil, fmt.Errorf("%w; pipelines are: %s", err, strings.Join(cfg.PipelineOrder, ", "))
	}
	return plan, err
}

func writePlanText(w io.Writer, cfg *config.Config, p *graph.Plan, files []string) {
	waves := 0
	for _, j := range p.Jobs {
		waves = max(waves, j.Wave+1)
	}
	if p.Empty() {
		fmt.Fprintf(w, "pipeline %s: nothing to deploy: %s, not even the bootstrap job; a buildset ends at once, SKIPPED, without touching the bastion\n", p.Pipeline, graph.NothingSelected)
	} else {
		fmt.Fprintf(w, "pipeline %s: %s in %s", p.Pipeline, plural(len(p.Jobs), "job", "jobs"), plural(waves, "wave", "waves"))
		if n := len(p.NotSelected); n > 0 {
			fmt.Fprintf(w, ", %d not selected", n)
		}
		fmt.Fprintln(w)
	}
	if files == nil {
		fmt.Fprintln(w, "no file list: every job of the pipeline runs (--files F plans a change)")
	} else if len(files) == 0 {
		fmt.Fprintln(w, "an empty file list: every job of the pipeline runs")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for wave := 0; wave < waves; wave++ {
		fmt.Fprintf(tw, "\nwave %d\n", wave)
		for _, j := range p.Jobs {
			if j.Wave != wave {
				continue
			}
			deps := "-"
			if len(j.Dependencies) > 0 {
				deps = "after " + strings.Join(j.Dependencies, ", ")
			}
			fmt.Fprintf(tw, "  %s\t%s\t(%s)\n", j.Name, deps, whyText(j))
		}
	}
	tw.Flush()
	if len(p.NotSelected) > 0 {
		fmt.Fprintln(w, "\nnot selected")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, n := range p.NotSelected {
			fmt.Fprintf(tw, "  %s\t(%s)\n", n.Name, notSelectedText(n.Reason))
		}
		tw.Flush()
	}
	if p.Empty() {
		return
	}
	est := "no duration hints"
	if p.Estimate > 0 {
		est = "estimated " + p.Estimate.Round(time.Second).String()
	}
	fmt.Fprintf(w, "\ncritical path: %s (%s)\n", strings.Join(p.CriticalPath, " -> "), est)
}

// whyText is a selected job's why for the text plan, with its detail
// when the detail is particular to the job: the file and the pattern that
// matched, a job without matchers, why a needed job would not run on its
// own. The bootstrap job's plain why and "no file list" are the same in
// every plan, and the header says the latter once.
func whyText(j graph.Job) string {
	switch {
	case j.Why == graph.WhyBootstrap:
		// Said when it is not the same in every plan: its own matchers
		// matched, or it runs only because other jobs do.
		if _, own, ok := strings.Cut(j.Detail, "; "); ok {
			return j.Why + "; " + own
		}
		return j.Why
	case j.Detail == "":
		return j.Why
	case j.Why == graph.WhyAll && !strings.HasPrefix(j.Detail, "it has no"):
		return j.Why
	case strings.HasPrefix(j.Why, "needed by "):
		// The why names the job; the detail's first part says it again.
		if _, own, ok := strings.Cut(j.Detail, "; "); ok {
			return j.Why + "; " + own
		}
		return j.Why
	}
	return j.Why + ": " + j.Detail
}

func notSelectedText(reason string) string {
	switch reason {
	case graph.NotFiles:
		return "files: no changed file matches"
	case graph.NotIrrelevantFiles:
		return "irrelevant_files: every changed file is irrelevant"
	}
	return reason
}
