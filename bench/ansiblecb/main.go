// Command ansiblecb measures what Sortie's Ansible callback plugin costs a
// play (docs/benchmarks.md): the wall time of ansible-playbook on a play of
// TASKS tasks over HOSTS hosts (aliases of this machine, with
// ansible_connection=local), with the plugin loaded as a job loads it and
// without, alternately, RUNS times each. It prints each run, the medians,
// the difference, and the size of the events file the plugin wrote. It
// measures; it asserts nothing.
//
//	go run ./bench/ansiblecb -hosts 20 -tasks 200 -runs 5
//
// The tasks are of two kinds, alternately: ansible.builtin.debug, which
// runs on the controller, and ansible.builtin.command (true), which runs
// a module on each host; -module debug makes them all debug, the worst
// case for the plugin's share.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/ansible"
)

func main() {
	hosts := flag.Int("hosts", 20, "hosts in the inventory")
	tasks := flag.Int("tasks", 200, "tasks in the play")
	runs := flag.Int("runs", 5, "runs with the plugin and without, each")
	forks := flag.Int("forks", 20, "ansible-playbook --forks")
	module := flag.String("module", "mixed", "mixed (debug and command) or debug")
	flag.Parse()
	if err := run(*hosts, *tasks, *runs, *forks, *module); err != nil {
		fmt.Fprintln(os.Stderr, "ansiblecb:", err)
		os.Exit(1)
	}
}

func run(hosts, tasks, runs, forks int, module string) error {
	dir, err := os.MkdirTemp("", "sortie-ansiblecb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	plugin := ansible.PluginDir(dir)
	if out, err := exec.Command("/bin/sh", "-c", ansible.InstallCommand(plugin)).CombinedOutput(); err != nil {
		return fmt.Errorf("install the plugin: %v: %s", err, out)
	}
	var inv strings.Builder
	inv.WriteString("all:\n  vars: {ansible_connection: local, ansible_python_interpreter: \"{{ ansible_playbook_python }}\"}\n  hosts:\n")
	for i := range hosts {
		fmt.Fprintf(&inv, "    host%02d: {}\n", i+1)
	}
	var play strings.Builder
	play.WriteString("- name: bench\n  hosts: all\n  gather_facts: false\n  tasks:\n")
	for i := range tasks {
		if module == "debug" || i%2 == 0 {
			fmt.Fprintf(&play, "    - name: task %d\n      ansible.builtin.debug: {msg: \"task %d on {{ inventory_hostname }}\"}\n", i, i)
		} else {
			fmt.Fprintf(&play, "    - name: task %d\n      ansible.builtin.command: \"true\"\n      changed_when: false\n", i)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "inventory.yaml"), []byte(inv.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "play.yaml"), []byte(play.String()), 0o644); err != nil {
		return err
	}
	out, _ := exec.Command("ansible-playbook", "--version").Output()
	fmt.Printf("%s, %d hosts, %d tasks (%s), forks %d, %d runs each\n", strings.SplitN(string(out), "\n", 2)[0], hosts, tasks, module, forks, runs)

	var wall, cpu [2][]time.Duration // [0] without, [1] with
	var events int64
	for i := range 2 * runs {
		on := i%2 == 1
		d, c, size, err := playbook(dir, plugin, forks, on, i)
		if err != nil {
			return err
		}
		k, kind := 0, "without"
		if on {
			k, kind = 1, "with   "
			events = size
		}
		wall[k] = append(wall[k], d)
		cpu[k] = append(cpu[k], c)
		fmt.Printf("run %2d %s the plugin: wall %v, cpu %v\n", i/2+1, kind, d.Round(time.Millisecond), c.Round(time.Millisecond))
	}
	for _, m := range []struct {
		name string
		d    [2][]time.Duration
	}{{"wall", wall}, {"cpu", cpu}} {
		for _, f := range []struct {
			name string
			f    func([]time.Duration) time.Duration
		}{{"fastest", slices.Min[[]time.Duration]}, {"median", median}} {
			a, b := f.f(m.d[0]), f.f(m.d[1])
			fmt.Printf("%-4s %-7s without: %v, with: %v, difference %+.1f%%\n", m.name, f.name,
				a.Round(time.Millisecond), b.Round(time.Millisecond), 100*(b.Seconds()-a.Seconds())/a.Seconds())
		}
	}
	fmt.Printf("events file: %d bytes\n", events)
	return nil
}

// playbook runs the play once and returns its wall time, its CPU time and,
// with the plugin, the size of its events file.
func playbook(dir, plugin string, forks int, on bool, i int) (time.Duration, time.Duration, int64, error) {
	events := filepath.Join(dir, fmt.Sprintf("events-%d.jsonl", i))
	env := map[string]string{
		"ANSIBLE_LOCAL_TEMP": filepath.Join(dir, "tmp"), "ANSIBLE_REMOTE_TEMP": filepath.Join(dir, "tmp"),
		"ANSIBLE_NOCOWS": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_NOCOLOR": "1",
	}
	if on {
		ansible.Env(env, plugin)
		env["SORTIE_EVENTS"] = events
	}
	cmd := exec.Command("ansible-playbook", "-i", filepath.Join(dir, "inventory.yaml"), "--forks", fmt.Sprint(forks), filepath.Join(dir, "play.yaml"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "LANG=C.UTF-8"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("ansible-playbook: %v\n%s", err, out)
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	var size int64
	if on {
		fi, err := os.Stat(events)
		if err != nil {
			return 0, 0, 0, errors.New("the plugin wrote no events file: is it loaded?")
		}
		size = fi.Size()
	}
	return d, cpu, size, nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
