// Package proxy is the forwarding core of baton's proxy mode: a public
// socket owned by baton in front of the generations of an app, each of
// which serves on its own private loopback socket.
//
// A [Set] holds the backends (one per generation) and their weights; it is
// swapped atomically with [Set.SetBackends] while traffic flows. Requests
// (HTTP) and connections (TCP) already in flight finish on the backend they
// started on; only new ones follow the new weights.
//
// [HTTPProxy] chooses a backend per request (a client's keep-alive
// connection is not pinned to a backend unless sticky sessions are asked
// for) and forwards it with net/http/httputil.ReverseProxy: keep-alive to
// clients and to backends, streaming bodies both ways, Upgrade (WebSocket)
// pass-through, X-Forwarded-For and Forwarded headers. [TCPProxy] chooses
// a backend per connection and copies bytes both ways (splice on Linux),
// propagating half-closes.
//
// Both record per-backend figures for canary analysis ([Set.Stats]):
// requests, 5xx answers, connection errors and a latency histogram, both
// cumulative (subtract two snapshots with [BackendStats.Sub] to judge one
// step of a rollout) and over a sliding window.
//
// Weights are relative non-negative integers: a backend's share of new
// requests is its weight divided by the sum of the weights. baton uses
// percentages (0..100, summing to 100). A backend of weight 0 gets no new
// traffic (not even sticky or retried traffic) but keeps its in-flight
// work. The choice is smooth weighted round robin, so shares are exact
// over every run of sum-of-weights choices, not just on average.
//
// Backends must be local: a "unix" socket path or a loopback "tcp"
// address (127.0.0.0/8, ::1 or localhost). Spreading traffic over hosts is
// the job of an external load balancer.
package proxy
