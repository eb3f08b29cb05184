// Package pipeline decides, for each pipeline, which of its queued buildsets
// may start now, which are replaced by a newer one, and which merge into one
// (SPEC §2.4 managers and pause). It is the pure part of `sortie serve`'s
// dispatcher, in the manner of Nomad's scheduler: a Snapshot of the
// pipelines goes in, a Plan of actions comes out, with no I/O and no clock.
// The caller reads the snapshot from the store, applies the plan there (each
// state change written before it is acted on), and asks again after every
// event: a buildset queued, a buildset finished, a pause or resume, a reload.
//
// # Managers
//
//   - serial: at most one buildset of the pipeline runs; when none runs, the
//     oldest queued starts. Others wait in arrival order.
//   - supercedent: at most one runs and at most one waits. Whenever more than
//     one is queued, every queued buildset but the newest is superseded by
//     the newest (a Supersede action: the caller finishes it CANCELED with
//     the action's Reason, which names its replacement). When none runs, the
//     newest queued starts; a supercedent pipeline never starts a buildset
//     while a newer one of it is queued.
//   - independent: every queued buildset starts at once.
//   - coalesce: serial, except that when nothing runs and several are
//     queued, they merge into one (a Coalesce action) for the newest commit
//     with the union of their changed files; a single queued buildset just
//     starts. A Coalesce both makes the merged buildset and starts it.
//
// # Rules decided where SPEC is silent
//
// Arrival order is Buildset.CreatedAt, then Buildset.Seq (the store's
// arrival sequence, which breaks ties of a coarse clock), then ID. "Oldest"
// and "newest" always mean this order.
//
// Supersede happens in Decide, whenever it sees more than one queued
// buildset of a supercedent pipeline, paused or not. Enqueue is Decide with
// the new buildset added to its pipeline's queue, so a dispatcher may decide
// at enqueue time, at dispatch time, or both, and the answers cannot
// disagree. Superseding while paused loses nothing the manager would not
// lose anyway (the newest commit contains the older ones; dropping older
// file lists is supercedent's documented trade-off), and it keeps the
// invariant that at most one waits, so a resume after a long pause runs the
// pipeline once, not once per queued event.
//
// Coalescing happens only at dispatch: when the pipeline can start something
// (nothing of it runs and it is not paused). Merging earlier would not start
// anything sooner, would make a new buildset per event, and while paused it
// would hide from the operator what is queued. Waiting until dispatch also
// lets the merge include every event that arrived up to that moment.
// Coalesce merges into a new buildset (Into is NewBuildset) because a
// buildset's job graph is frozen at creation (SPEC §2.1) and the union of the
// files can select jobs that no member's graph holds. The caller finishes
// each member CANCELED with Coalesce.MemberReason(newID). Files of the merge
// is the sorted union of the members' files, or nil ("every job", SPEC §2.2)
// when any member has no file list or an empty one, since such a member
// would have run every job. Since is the oldest member's CreatedAt: giving
// the merged buildset that creation time keeps its place among the waiters
// of a semaphore, so merging never makes a pipeline wait longer.
//
// Pause: when the pipeline or all pipelines are paused, no Start or
// Coalesce is planned for it; events keep queueing, supercedent still
// supersedes, running buildsets are not touched (no action ever names a
// running buildset). Plan.Waiting says, for every buildset left queued, why
// (who paused and why, or which running buildset it waits behind). A pause
// of all pipelines is reported in preference to a pause of one.
//
// Running means "released by its manager": a buildset for which a Start or
// Coalesce was applied, whether or not it holds its pipeline semaphore yet.
// The caller must count buildsets that were started but still wait for the
// semaphore as running, or a serial pipeline would start a second one.
//
// Running buildsets limit their own pipeline only. When a snapshot holds
// more than one running buildset of a serial, supercedent or coalesce
// pipeline (its manager was changed by a reload), nothing of it starts
// until all have finished. An empty or unknown Manager is treated as serial,
// the manager that loses and overlaps nothing.
//
// # Precedence
//
// Across pipelines, the pipeline semaphore is granted by the store: highest
// precedence first, then the oldest waiter (SPEC §2.4, §2.5). This package
// does not order pipelines against each other beyond that: it returns every
// start the managers allow. It does return them in a deterministic order,
// higher precedence first, then older (arrival order above; a Coalesce is as
// old as its oldest member), then pipeline name, so that a dispatcher that
// registers its starts in plan order also asks for the semaphore in
// precedence order. Plan.Actions lists every Supersede first (by pipeline
// name, then arrival), then the starts (Start and Coalesce) in that order.
//
// # Deciding again only what changed
//
// What the managers decide for one pipeline depends on that pipeline and
// on the pause of all, and on nothing else: Decide is Merge of each
// pipeline's Decision (DecidePipeline). A caller that keeps the Decisions
// decides again only for the pipelines whose queue, config or pause
// changed, and merges them into the same Plan.
package pipeline
