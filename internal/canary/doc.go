// Package canary runs the progressive rollout of baton's proxy mode: a new
// generation (the canary) takes a growing share of new traffic, step by
// step (for example 1, 10, 50 then 100 percent), and is compared with the
// generation that served before it (the stable one) over each step. At the
// first step where it does clearly worse, its share goes back to 0 at
// once and [Rollout.Run] returns a [*FailedError] (errors.Is
// contract.ErrCanaryFailed, wire code canary_failed) carrying the figures.
//
// The package only decides; the caller owns the weights and the figures:
// [Rollout.SetShare] sets the canary's share (stable 100-p, canary p) and
// [Rollout.Stats] reads the proxy's per-backend figures (proxy.Set.Stats).
//
// # What is measured
//
// The figures are the proxy's ([proxy.BackendStats]). For HTTP, a request
// counts when the backend's answer header arrives; an error is an answer
// of status 500 or more, or a connection error (dial failure, reset,
// timeout: no answer at all, including a dial failure the proxy passed on
// to another backend, which the client never saw but the canary caused);
// latency is the time to the answer's header, so that streams and
// WebSockets do not count their lifetime. For TCP, a request is a
// connection, errors are connection errors and latency is the time to
// connect. The error ratio is errors / (answers + connection errors).
//
// # The judgement of a step
//
// Each step is judged on the figures counted since it began (the
// difference of two snapshots, [proxy.BackendStats.Sub]), so that earlier
// steps neither hide nor excuse what the canary does now. The stable
// generation's figures over the same step are the baseline; when it had
// fewer than MinRequests in the step (at 100 percent it gets none), its
// figures since the rollout began are used instead ([Verdict.Baseline]).
// A stable generation without MinRequests even then is no baseline: its
// error ratio counts as 0 and the p99 check is skipped.
//
// The checks, in this order ([Judge]):
//
//   - evidence: the canary answered at least MinRequests requests in the
//     step. With fewer the step is undecided, and a rollout extends it
//     (see below) rather than judge on a handful of requests or promote a
//     canary that nobody used.
//   - error_ratio: canary ratio − baseline ratio ≤ MaxErrorRatio. The
//     excess is absolute (percentage points), not relative: a relative
//     bound is meaningless when the stable generation has no errors (any
//     canary error is an infinite ratio) and too lax when it has many; an
//     absolute excess reads as "at most 1 request in 100 more fails".
//   - p99: canary p99 ≤ max(MaxP99Ratio × baseline p99, MinP99). The floor
//     MinP99 keeps scheduler noise on fast services (a p99 of 300µs
//     against 200µs) from failing a release nobody could tell apart. The
//     first step's warm-up (Rollout.Warmup) is not judged on latency.
//
// # When a rollout decides
//
// At the end of a step (StepInterval after it began) the checks above
// decide with the figures as they are. If the canary has fewer than
// MinRequests by then, the step goes on until it has them, for at most
// EvidenceTimeout more; then the rollout stops as failed (check
// min_requests, the canary back to 0): a canary that cannot be judged is
// not promoted.
//
// Within a step the figures are looked at every CheckEvery (100ms), so
// that a broken canary is caught as soon as the evidence is clear, not at
// the end of a long step. As looking often at a small sample would fail
// healthy canaries by chance, a step ends early only on clear evidence:
// once the canary has at least min(10, MinRequests) requests, and the
// 99.87% confidence bounds (Wilson score, z = 3) leave no doubt: the
// lower bound of the canary's error ratio exceeds the upper bound of the
// baseline's by more than MaxErrorRatio, or the lower bound of the share
// of canary requests slower than the p99 limit exceeds 1%.
//
// # Interrupting
//
// Cancelling the context (an operator's promote, weight or rollback
// command) makes Run return the context's error at once and leaves the
// weights as they are: the command that interrupted decides them.
package canary
