package release

import (
	"fmt"
	"strings"
)

// Holder is a process that holds a file.
type Holder struct {
	PID   int    `json:"pid"`
	Name  string `json:"name"`
	Write bool   `json:"write"` // open for writing
	How   string `json:"how"`   // "running it", "mapped", "open (fd 3)", "in use" (Restart Manager)
}

func (h Holder) String() string {
	s := fmt.Sprintf("pid %d (%s)", h.PID, h.Name)
	switch {
	case h.Write:
		return s + " has it open for writing"
	case h.How != "":
		return s + " " + h.How
	}
	return s + " holds it"
}

func describeHolders(hs []Holder) string {
	parts := make([]string, len(hs))
	for i, h := range hs {
		parts[i] = h.String()
	}
	return strings.Join(parts, "; ")
}
