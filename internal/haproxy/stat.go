package haproxy

import (
	"encoding/csv"
	"fmt"
	"strconv"
	"strings"
)

// Server is one server of a backend as `show stat` reports it.
type Server struct {
	Backend string
	Name    string
	Addr    string // address:port
	// Status is HAProxy's: "UP", "UP 1/3" (up, a check failed), "DOWN",
	// "DOWN 1/2" (down, a check passed), "DRAIN", "MAINT", "NOLB",
	// "no check".
	Status string
	// Weight is the weight set in the configuration or by SetWeight (the
	// "uweight" column; "weight" where HAProxy has no such column).
	Weight        int
	Sessions      int   // current sessions (requests in flight with http-server-close)
	TotalSessions int64 // sessions since start
	// CheckStatus is the last health check's result ("L7OK", "L7STS",
	// "L4CON", "L4TOUT" ...; "" when not checked, e.g. in maintenance)
	// and CheckDesc its text.
	CheckStatus, CheckDesc string
	// CheckRise, CheckFall and CheckHealth are the check's rise and fall
	// counts and its health counter: the server is up while CheckHealth
	// >= CheckRise, and fully healthy (no failed check since it came up)
	// at CheckRise+CheckFall-1. All 0 without a check.
	CheckRise, CheckFall, CheckHealth int
}

// HasCheck reports whether the server's health is checked (and not
// suspended by maintenance).
func (s Server) HasCheck() bool { return s.CheckRise > 0 }

// Up reports whether HAProxy considers the server's health check passing
// (it takes traffic unless drained, in maintenance or at weight 0).
func (s Server) Up() bool { return s.HasCheck() && s.CheckHealth >= s.CheckRise }

// Healthy reports whether the server is up with no failed check since it
// came up: a failing one ("UP 1/3") is on its way down.
func (s Server) Healthy() bool {
	return s.Up() && s.CheckHealth >= s.CheckRise+s.CheckFall-1
}

// Draining reports whether the server is in the drain state.
func (s Server) Draining() bool { return strings.HasPrefix(s.Status, "DRAIN") }

// InMaint reports whether the server is in maintenance.
func (s Server) InMaint() bool { return strings.HasPrefix(s.Status, "MAINT") }

// parseStat reads `show stat` CSV (a "# " header line naming the columns,
// then one line per proxy, server, frontend or backend) and returns the
// server lines of backend. Columns are found by name, so versions that add
// or move columns are read alike.
func parseStat(out, backend string) ([]Server, error) {
	out = strings.TrimLeft(out, "\n")
	if !strings.HasPrefix(out, "# ") {
		return nil, fmt.Errorf("%w: show stat: unexpected answer %q", ErrCommand, firstLine(out))
	}
	r := csv.NewReader(strings.NewReader(out[2:]))
	r.FieldsPerRecord = -1
	r.ReuseRecord = false
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%w: show stat: unreadable CSV: %w", ErrCommand, err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%w: show stat: no header", ErrCommand)
	}
	col := map[string]int{}
	for i, name := range recs[0] {
		if _, dup := col[name]; !dup && name != "" {
			col[name] = i
		}
	}
	for _, need := range []string{"pxname", "svname", "status", "scur", "weight"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("%w: show stat: no %q column", ErrCommand, need)
		}
	}
	get := func(rec []string, name string) string {
		i, ok := col[name]
		if !ok || i >= len(rec) {
			return ""
		}
		return rec[i]
	}
	num := func(rec []string, name string) int {
		n, _ := strconv.Atoi(get(rec, name))
		return n
	}
	var servers []Server
	for _, rec := range recs[1:] {
		if get(rec, "pxname") != backend {
			continue
		}
		sv := get(rec, "svname")
		if sv == "FRONTEND" || sv == "BACKEND" {
			continue
		}
		s := Server{
			Backend:     backend,
			Name:        sv,
			Addr:        get(rec, "addr"),
			Status:      get(rec, "status"),
			Weight:      num(rec, "weight"),
			Sessions:    num(rec, "scur"),
			CheckStatus: strings.TrimPrefix(get(rec, "check_status"), "* "),
			CheckDesc:   get(rec, "check_desc"),
			CheckRise:   num(rec, "check_rise"),
			CheckFall:   num(rec, "check_fall"),
			CheckHealth: num(rec, "check_health"),
		}
		if u := get(rec, "uweight"); u != "" {
			s.Weight, _ = strconv.Atoi(u)
		}
		s.TotalSessions, _ = strconv.ParseInt(get(rec, "stot"), 10, 64)
		servers = append(servers, s)
	}
	return servers, nil
}
