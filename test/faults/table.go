//go:build linux

package main

import (
	"fmt"
	"io"
	"strings"
)

// PrintTable writes the rows as a Markdown table (the form
// docs/reliability.md keeps).
func PrintTable(w io.Writer, rows []Row) {
	cell := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", "\\|"), "\n", " ") }
	fmt.Fprintln(w, "| case | mode | expected | observed | failed requests | result |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", cell(r.Case), cell(r.Mode), cell(r.Expected), cell(r.Observed), cell(r.Failed), verdict(r.Pass))
	}
}
