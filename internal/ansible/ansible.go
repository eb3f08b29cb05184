// Package ansible records what Ansible does in a build, per host and task.
//
// Sortie ships a small callback plugin (plugin/sortie.py, embedded in the
// binary). The bootstrap job puts it in the buildset's checkout on the
// bastion, out of the work tree (PluginDir), and every job's environment
// names its directory in ANSIBLE_CALLBACK_PLUGINS (Env): a `playbook:` job,
// and a `run:` job that calls ansible-playbook any number of times, load
// it. The plugin prints nothing (the log is what Ansible's own stdout
// callback makes of the play) and appends one JSON event per line to the
// attempt's events file, which the bastion names in $SORTIE_EVENTS and
// copies back as it grows (bastion.Spec.Events). A Recorder reads those
// events as they come and keeps them in the store (store.Hosts), within
// the bounds of Limits, so that a playbook over thousands of hosts does
// not bloat it.
//
// Nothing here ever fails a build: an events file that is garbage, or cut
// short by a kill, gives a Note, and the build keeps the result of its
// command.
package ansible

import (
	_ "embed"
	"fmt"
	"strings"
)

//go:embed plugin/sortie.py
var plugin []byte

// pluginFile is the plugin's file name, which is also the callback's name
// for Ansible.
const pluginFile = "sortie.py"

// Plugin returns the source of the callback plugin.
func Plugin() []byte { return append([]byte(nil), plugin...) }

// PluginDir is the directory of the plugin in a checkout on the bastion:
// under its .git directory, so that no job sees it in the work tree, and
// removed with the checkout.
func PluginDir(checkout string) string { return checkout + "/.git/sortie/ansible" }

// PluginPath is the plugin's file in dir (PluginDir).
func PluginPath(dir string) string { return dir + "/" + pluginFile }

// heredoc ends the plugin's text in InstallCommand; the plugin never has
// a line like it (TestPluginHasNoTerminator).
const heredoc = "SORTIE_ANSIBLE_PLUGIN_END"

// InstallCommand is a shell command that puts the plugin in dir on the
// bastion: written aside, then renamed, so that a job never loads half of
// it. It runs with /bin/sh on any bastion (bastion.Bastion.Run).
func InstallCommand(dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "d=%s && mkdir -p \"$d\" && cat > \"$d/.%s.tmp\" <<'%s'\n", shellQuote(dir), pluginFile, heredoc)
	b.Write(plugin)
	if !strings.HasSuffix(string(plugin), "\n") {
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "%s\nmv -f \"$d/.%s.tmp\" \"$d/%s\"\n", heredoc, pluginFile, pluginFile)
	return b.String()
}

// Ansible's variables for callback plugins.
const (
	// CallbackPluginsEnv is Ansible's path of callback plugin directories.
	CallbackPluginsEnv = "ANSIBLE_CALLBACK_PLUGINS"
	// defaultCallbackPath is Ansible's own default for it.
	defaultCallbackPath = "~/.ansible/plugins/callback:/usr/share/ansible/plugins/callback"
)

// Env adds to a job's environment what makes ansible-playbook load the
// plugin from dir: ANSIBLE_CALLBACK_PLUGINS with dir first, then the
// job's own value of it when env sets one, else Ansible's default path.
// The plugin needs no enabling: ANSIBLE_CALLBACKS_ENABLED is left to the
// job (setting it would replace the callbacks_enabled of the repository's
// ansible.cfg).
func Env(env map[string]string, dir string) {
	rest := defaultCallbackPath
	if v := env[CallbackPluginsEnv]; v != "" {
		rest = v
	}
	env[CallbackPluginsEnv] = dir + ":" + rest
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
