package zuulimport

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sortie-ci/sortie/internal/config"
)

// pipeline is a Zuul pipeline stanza, as Sortie will run it.
type pipeline struct {
	name       string
	pos        Pos
	manager    string // Sortie's: serial, supercedent, independent
	zuulMgr    string
	precedence string // "" for Zuul's default, normal
	push       bool   // a merged change or a push starts it
	pushWhat   string // which Zuul events, for the comment
	cron       string
	jitter     time.Duration
	notes      []string // how it was converted, for the comment
	warnings   []Warning
}

// managers maps Zuul's pipeline managers to Sortie's. A dependent
// pipeline gates changes speculatively, which a deployment after a merge
// does not: it runs its buildsets one at a time, in order, as serial does.
var managers = map[string]string{
	"dependent":   "serial",
	"serial":      "serial",
	"supercedent": "supercedent",
	"independent": "independent",
}

// pushEvents are the trigger events of a change merged, or a branch
// pushed to: what Sortie's push trigger stands for.
var pushEvents = map[string]bool{
	"change-merged": true, // Gerrit
	"ref-updated":   true, // Gerrit
	"push":          true, // GitHub, Gitea, Pagure
	"gl_push":       true, // GitLab
}

// pipelineQuiet are the keys of a pipeline stanza that change nothing of
// what a deployment runs.
var pipelineQuiet = map[string]bool{
	"name": true, "description": true, "post-review": true, "supercedes": true,
	"window": true, "window-floor": true, "window-ceiling": true, "window-increase-type": true,
	"window-increase-factor": true, "window-decrease-type": true, "window-decrease-factor": true,
	"success-message": true, "failure-message": true, "start-message": true, "merge-conflict-message": true,
	"enqueue-message": true, "no-jobs-message": true, "dequeue-message": true, "footer-message": true,
	"dequeue-on-new-patchset": true, "ignore-dependencies": true, "allow-other-connections": true,
	"disable-after-consecutive-failures": true, "disabled": true,
}

// pipelineReporters are the keys naming who hears of a pipeline's
// buildsets: Sortie has reporters, but of its own kind.
var pipelineReporters = map[string]bool{
	"enqueue": true, "start": true, "success": true, "failure": true, "merge-conflict": true,
	"merge-failure": true, "no-jobs": true, "disabled": true, "dequeue": true, "config-error": true,
}

func parsePipeline(s stanza) (*pipeline, bool) {
	name, ok := scalar(get(s.body, "name"))
	if !ok {
		return nil, false
	}
	p := &pipeline{name: name, pos: s.pos, manager: "serial"}
	warn := func(at *yaml.Node, format string, args ...any) {
		p.warnings = append(p.warnings, Warning{Pos: pos(s.file, at), Msg: "pipeline " + name + ": " + fmt.Sprintf(format, args...)})
	}
	var reporters []string
	var firstReporter *yaml.Node
	for _, kv := range pairs(s.body) {
		k, v := kv[0], kv[1]
		switch key := k.Value; {
		case key == "manager":
			m, _ := scalar(v)
			p.zuulMgr = m
			if sm, ok := managers[m]; ok {
				p.manager = sm
				if m == "dependent" {
					p.notes = append(p.notes, "manager dependent: serial (a deployment is not gated speculatively)")
				}
			} else {
				warn(v, "manager %s: not imported: Sortie's managers are serial, supercedent, independent and coalesce; serial", m)
			}
		case key == "precedence":
			pr, _ := scalar(v)
			switch pr {
			case "high", "low":
				p.precedence = pr
			case "normal":
			default:
				warn(v, "precedence %s: not imported: use high, normal or low", pr)
			}
		case key == "trigger":
			p.trigger(s.file, v, warn)
		case key == "require" || key == "reject":
			warn(k, "%s: not imported: Sortie starts a buildset for every event of its trigger", key)
		case pipelineReporters[key]:
			reporters = append(reporters, key)
			if firstReporter == nil {
				firstReporter = k
			}
		case pipelineQuiet[key]:
		default:
			warn(k, "%s: not imported: Sortie has no equivalent", key)
		}
	}
	if len(reporters) > 0 {
		warn(firstReporter, "reporters (%s): not imported: define Sortie reporters and name them under the pipeline's report", strings.Join(reporters, ", "))
	}
	return p, true
}

// trigger reads a pipeline's trigger: a mapping of connection to a list
// of event filters. The timer connection becomes cron; merged changes and
// pushes become a push trigger.
func (p *pipeline) trigger(file string, n *yaml.Node, warn func(*yaml.Node, string, ...any)) {
	var pushes []string
	timers := 0
	for _, kv := range pairs(n) {
		conn := kv[0].Value
		for _, f := range items(kv[1]) {
			if conn == "timer" {
				t, ok := scalar(get(f, "time"))
				if !ok {
					warn(f, "a timer without time: not imported")
					continue
				}
				timers++
				if timers > 1 {
					warn(f, "timer %q: not imported: a Sortie pipeline has one cron trigger; make another pipeline for it", t)
					continue
				}
				p.timer(t, get(f, "time"), warn)
				continue
			}
			for _, ev := range items(get(f, "event")) {
				e, _ := scalar(ev)
				switch {
				case pushEvents[e] && strings.Contains(refFilter(f), "tags"):
					warn(ev, "trigger %s %s on tags: not imported: Sortie deploys a branch", conn, e)
				case pushEvents[e]:
					if !slices.Contains(pushes, conn+" "+e) {
						pushes = append(pushes, conn+" "+e)
					}
				default:
					warn(ev, "trigger %s %s: not imported: Sortie starts buildsets on a push (a merged change), on cron, and by hand", conn, e)
				}
			}
		}
	}
	if len(pushes) > 0 {
		p.push = true
		p.pushWhat = strings.Join(pushes, ", ")
	}
}

// refFilter is the ref filter of an event filter, "" for none.
func refFilter(f *yaml.Node) string {
	var out []string
	for _, it := range items(get(f, "ref")) {
		if s, ok := scalar(it); ok {
			out = append(out, s)
		}
	}
	return strings.Join(out, " ")
}

// timer converts a Zuul timer: five cron fields whose day of week counts
// from Monday (0) as APScheduler does, an optional sixth for seconds and
// an optional seventh for a jitter in seconds.
func (p *pipeline) timer(spec string, at *yaml.Node, warn func(*yaml.Node, string, ...any)) {
	f := strings.Fields(spec)
	if len(f) < 5 || len(f) > 7 {
		warn(at, "timer %q: not imported: not 5 to 7 fields", spec)
		return
	}
	dow, changed, err := convertDow(f[4])
	if err != nil {
		warn(at, "timer %q: not imported: day of week %s: %v", spec, f[4], err)
		return
	}
	expr := strings.Join([]string{f[0], f[1], f[2], f[3], dow}, " ")
	if _, err := config.ParseCron(expr); err != nil {
		warn(at, "timer %q: not imported: %v", spec, err)
		return
	}
	p.cron = expr
	note := fmt.Sprintf("timer %q", spec)
	if changed {
		note += fmt.Sprintf(": day of week %s (Zuul counts from Monday = 0) is %s here (from Sunday = 0)", f[4], dow)
	}
	p.notes = append(p.notes, note)
	if f[2] != "*" && f[4] != "*" {
		warn(at, "timer %q: Zuul runs it when both the day of month and the day of week match; Sortie's cron, when either does", spec)
	}
	if len(f) >= 6 && f[5] != "0" && f[5] != "00" {
		warn(at, "timer %q: seconds field %s: not imported: Sortie's cron starts on the minute", spec, f[5])
		p.notes = append(p.notes, "seconds field "+f[5]+" dropped")
	}
	if len(f) == 7 {
		s, err := strconv.Atoi(f[6])
		if err != nil || s < 0 {
			warn(at, "timer %q: jitter %s: not imported: not a number of seconds", spec, f[6])
			return
		}
		p.jitter = time.Duration(s) * time.Second
	}
}

var dayNames = map[string]bool{"mon": true, "tue": true, "wed": true, "thu": true, "fri": true, "sat": true, "sun": true}

// convertDow turns an APScheduler day-of-week field (0 is Monday) into a
// cron one (0 is Sunday). Names mean the same in both and are kept; each
// numeric item (n, a-b, */s, a-b/s) becomes the list of days it names.
func convertDow(field string) (string, bool, error) {
	if field == "*" || field == "?" {
		return "*", false, nil
	}
	days := map[int]bool{}
	var names []string
	for _, item := range strings.Split(field, ",") {
		if dayNames[strings.ToLower(item)] || strings.Contains(strings.ToLower(item), "-") && dayNames[strings.ToLower(strings.SplitN(item, "-", 2)[0])] {
			names = append(names, item)
			continue
		}
		rng, step := item, 1
		if r, s, ok := strings.Cut(item, "/"); ok {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				return "", false, fmt.Errorf("bad step %q", s)
			}
			rng, step = r, n
		}
		lo, hi := 0, 6
		if rng != "*" {
			a, b, isRange := strings.Cut(rng, "-")
			var err error
			if lo, err = strconv.Atoi(a); err != nil {
				return "", false, fmt.Errorf("%q is not a day", item)
			}
			hi = lo
			if isRange {
				if hi, err = strconv.Atoi(b); err != nil {
					return "", false, fmt.Errorf("%q is not a day", item)
				}
			}
		}
		if lo < 0 || hi > 6 || lo > hi {
			return "", false, fmt.Errorf("%q is out of 0-6", item)
		}
		for d := lo; d <= hi; d += step {
			days[(d+1)%7] = true
		}
	}
	if len(days) == 7 && len(names) == 0 {
		return "*", true, nil
	}
	var out []string
	for d := range 7 {
		if days[d] {
			out = append(out, strconv.Itoa(d))
		}
	}
	out = append(out, names...)
	return strings.Join(out, ","), len(days) > 0, nil
}
