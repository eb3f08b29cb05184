# Sortie's Ansible callback plugin: it records what each play did, per host
# and task, for Sortie to keep with the build. Sortie puts it on the bastion
# and names its directory in ANSIBLE_CALLBACK_PLUGINS for every job; it needs
# no enabling (CALLBACK_NEEDS_ENABLED is False), so a callbacks_enabled list
# of the repository's ansible.cfg stays as it is.
#
# It prints nothing: the job's log is what Ansible's stdout callback makes of
# the play, as without Sortie. It appends one JSON object per line to the
# file named by $SORTIE_EVENTS, each in a single write, and does nothing when
# that variable is not set (ansible-playbook run by hand). Any error of its
# own turns it off for the rest of the run, silently: a deploy never fails
# because of it.
#
# Events ("ev"), each with "run", an id of this ansible-playbook process:
#   start   playbook, check, diff_mode, limit, ansible (version)
#   play    id, name
#   task    id, name, play (id), handler
#   result  task (id), host, status (ok|changed|failed|unreachable|skipped),
#           ignored, ms (duration), msg (failures), diff (when given)
#   stats   hosts: {host: {ok, changed, failures, unreachable, skipped,
#           rescued, ignored}}
from __future__ import annotations

DOCUMENTATION = '''
    name: sortie
    type: aggregate
    short_description: records results per host and task for Sortie
    description:
      - Appends one JSON event per line to the file named by SORTIE_EVENTS.
    requirements:
      - SORTIE_EVENTS set by Sortie; without it the plugin does nothing.
'''

import json
import os
import time
import uuid

from ansible import constants as C
from ansible import context
from ansible.plugins.callback import CallbackBase

try:
    from ansible.release import __version__ as ANSIBLE_VERSION
except Exception:  # pragma: no cover
    ANSIBLE_VERSION = ''

# What one event may carry at most; Sortie keeps less (see its docs).
MAX_MSG = 8192
MAX_DIFF = 65536
MAX_NAME = 1024

INCLUDES = frozenset(getattr(C, '_ACTION_ALL_INCLUDES', ('include', 'include_tasks', 'include_role')))


def _cut(s, n):
    if s is None:
        return ''
    if not isinstance(s, str):
        s = str(s)
    if len(s) > n:
        return s[:n] + '\n[... cut by sortie: %d more characters]' % (len(s) - n)
    return s


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'sortie'
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._fd = None
        self._run = '%d-%s' % (os.getpid(), uuid.uuid4().hex[:12])
        self._play = ''
        self._task_t0 = {}
        self._host_t0 = {}
        path = os.environ.get('SORTIE_EVENTS')
        if not path:
            self.disabled = True
            return
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), 0o600)
        except Exception:
            self.disabled = True

    def _emit(self, ev, **fields):
        if self._fd is None:
            return
        try:
            fields['ev'] = ev
            fields['run'] = self._run
            line = json.dumps(fields, separators=(',', ':'), default=str, ensure_ascii=False) + '\n'
            data = line.encode('utf-8', 'replace')
            # One write per event: lines of processes appending to the same
            # file at once do not interleave.
            n = os.write(self._fd, data)
            while n < len(data):
                n += os.write(self._fd, data[n:])
        except Exception:
            self._off()

    def _off(self):
        self.disabled = True
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except Exception:
                pass

    def v2_playbook_on_start(self, playbook):
        try:
            args = context.CLIARGS
            self._emit('start', playbook=_cut(getattr(playbook, '_file_name', ''), MAX_NAME),
                       check=bool(args.get('check')), diff_mode=bool(args.get('diff')),
                       limit=_cut(args.get('subset') or '', MAX_NAME), ansible=ANSIBLE_VERSION)
        except Exception:
            self._off()

    def v2_playbook_on_play_start(self, play):
        try:
            self._play = str(play._uuid)
            self._emit('play', id=self._play, name=_cut(play.get_name(), MAX_NAME))
        except Exception:
            self._off()

    def _task(self, task, handler):
        try:
            tid = str(task._uuid)
            if tid not in self._task_t0:
                self._task_t0[tid] = time.time()
            self._emit('task', id=tid, name=_cut(task.get_name(), MAX_NAME), play=self._play, handler=handler)
        except Exception:
            self._off()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task(task, False)

    def v2_playbook_on_cleanup_task_start(self, task):
        self._task(task, False)

    def v2_playbook_on_handler_task_start(self, task):
        self._task(task, True)

    def v2_runner_on_start(self, host, task):
        try:
            self._host_t0[(host.get_name(), str(task._uuid))] = time.time()
        except Exception:
            self._off()

    def _result(self, result, status, ignored=False):
        try:
            task = result._task
            if task.action in INCLUDES:
                return  # not a task of its own: its tasks report
            tid = str(task._uuid)
            host = result._host.get_name()
            now = time.time()
            t0 = self._host_t0.pop((host, tid), None) or self._task_t0.get(tid, now)
            r = result._result
            fields = dict(task=tid, host=host, status=status, ms=int(max(now - t0, 0) * 1000))
            if ignored:
                fields['ignored'] = True
            if status in ('failed', 'unreachable'):
                fields['msg'] = _cut(self._message(r), MAX_MSG)
            diff = self._diff(r)
            if diff:
                fields['diff'] = _cut(diff, MAX_DIFF)
            self._emit('result', **fields)
        except Exception:
            self._off()

    def _message(self, r):
        parts = []
        for key in ('msg', 'reason', 'module_stderr', 'stderr', 'exception'):
            v = r.get(key)
            if v and isinstance(v, str) and not any(v.strip() in p for p in parts):
                parts.append(v.strip())
        if not parts:
            for item in r.get('results') or []:
                if isinstance(item, dict) and item.get('failed'):
                    m = self._message(item)
                    if m:
                        return m
        if not parts and r.get('censored'):
            parts.append(str(r['censored']))
        return '\n'.join(parts)

    def _diff(self, r):
        diffs = []
        if r.get('diff'):
            diffs.append(r['diff'])
        for item in r.get('results') or []:
            if isinstance(item, dict) and item.get('diff'):
                diffs.append(item['diff'])
        if not diffs:
            return ''
        out = []
        for d in diffs:
            text = self._get_diff(d)
            if text:
                out.append(text)
        return ''.join(out)

    def v2_runner_on_ok(self, result):
        self._result(result, 'changed' if result._result.get('changed') else 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, 'failed', ignored=bool(ignore_errors))

    def v2_runner_on_skipped(self, result):
        self._result(result, 'skipped')

    def v2_runner_on_unreachable(self, result):
        self._result(result, 'unreachable')

    def v2_playbook_on_stats(self, stats):
        try:
            hosts = {}
            for h in sorted(stats.processed.keys()):
                hosts[h] = stats.summarize(h)
            self._emit('stats', hosts=hosts)
        except Exception:
            self._off()
