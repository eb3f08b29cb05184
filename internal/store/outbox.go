package store

import (
	"context"
	"time"
)

// DeliveryState is where a report delivery is in its life: pending until
// it is delivered, or until its sender gives up on it.
type DeliveryState string

const (
	// DeliveryPending: not delivered yet; tried again from NextAt on.
	DeliveryPending DeliveryState = "pending"
	// DeliveryDelivered: the receiver took it.
	DeliveryDelivered DeliveryState = "delivered"
	// DeliveryFailed: given up on; LastError says why.
	DeliveryFailed DeliveryState = "failed"
)

// ReportDelivery is a row of the outbox: one event of a buildset to tell
// one reporter. The row is recorded in the same transaction as the state
// change that causes it (CreateBuildset, StartBuildset, EndBuildset), so
// that the change and its report are both kept or neither is; a sender
// claims it (ClaimReportDeliveries) and records how each try went
// (FinishReportDelivery).
type ReportDelivery struct {
	// ID is unique; the receiver sees it on every try (a webhook's
	// X-Sortie-Delivery, a Matrix transaction id).
	ID string
	// Seq is the order it was recorded in, across the store.
	Seq      int64
	Buildset string
	// Reporter is the reporter's name, Event what it is told of (start,
	// success, failure, cancel).
	Reporter string
	Event    string
	// Target says how to reach the reporter, as the caller froze it: an
	// opaque document, kept as given, that holds no secret.
	Target []byte
	State  DeliveryState
	// Tries counts the tries claimed so far, the one in flight included.
	Tries     int
	LastError string
	CreatedAt time.Time
	// NextAt is when it may be tried (again).
	NextAt    time.Time
	LastTryAt *time.Time
	// DoneAt is when it was delivered or given up on.
	DoneAt *time.Time
	// ClaimedBy and ClaimedUntil hold a try in flight: the sender that
	// claimed it, and until when no other may. "" and nil when none.
	ClaimedBy    string
	ClaimedUntil *time.Time
}

// NewReportDelivery is a delivery to record with the state change that
// causes it: pending, due at At.
type NewReportDelivery struct {
	ID       string
	Reporter string
	Event    string
	Target   []byte
	// At is when it is recorded, and due; it must be set.
	At time.Time
}

// Outbox keeps the report deliveries and hands them to senders. Rows are
// inserted only with the state changes that cause them (see
// ReportDelivery).
type Outbox interface {
	// ClaimReportDeliveries claims for p.Worker, until p.Until, up to
	// p.Limit deliveries that are pending, due at p.Now and not claimed
	// (or whose claim ended before p.Now: a dead sender's), oldest due
	// first, and counts a try of each. Only the oldest pending delivery
	// of each buildset and reporter is claimed, so that a reporter hears
	// of one buildset's events in order. Of several senders claiming at
	// once, in any process, each delivery goes to one.
	ClaimReportDeliveries(ctx context.Context, p ClaimReportDeliveriesParams) ([]*ReportDelivery, error)
	// FinishReportDelivery records how a claimed try went. It is
	// ErrConflict, changing nothing, unless the delivery is still pending
	// and claimed by p.Worker for try p.Try (a claim that ran out and was
	// taken over is not the worker's any more), and ErrNotFound for an
	// unknown id. The claim is released.
	FinishReportDelivery(ctx context.Context, p FinishReportDeliveryParams) error
	// ReportDeliveries returns a buildset's deliveries in the order they
	// were recorded.
	ReportDeliveries(ctx context.Context, buildsetID string) ([]*ReportDelivery, error)
	// ReportDeliveryStats counts the pending deliveries, and the time the
	// oldest was recorded.
	ReportDeliveryStats(ctx context.Context) (ReportDeliveryStats, error)
}

// ClaimReportDeliveriesParams say who claims deliveries, how many, and for
// how long.
type ClaimReportDeliveriesParams struct {
	Worker string
	// Now is when the deliveries must be due; Until ends the claim.
	Now, Until time.Time
	Limit      int
}

// FinishReportDeliveryParams is the outcome of one try.
type FinishReportDeliveryParams struct {
	ID     string
	Worker string
	// Try is the delivery's Tries as claimed.
	Try int
	// State is delivered, failed (given up), or pending again from
	// NextAt.
	State  DeliveryState
	Error  string
	NextAt time.Time
	// At is when the try ended: DoneAt for a delivery delivered or
	// failed.
	At time.Time
}

// ReportDeliveryStats describe the outbox's pending deliveries.
type ReportDeliveryStats struct {
	Pending int
	// OldestPending is when the oldest pending delivery was recorded; nil
	// when none is pending.
	OldestPending *time.Time
}
