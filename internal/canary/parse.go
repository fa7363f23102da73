package canary

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseSteps parses a list of steps such as "1,10,50,100": whole
// percentages in (0, 100], strictly increasing, separated by commas
// (spaces around them are allowed). Errors wrap ErrBadPlan and name the
// offending item.
func ParseSteps(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%w: no steps: want percentages such as 1,10,50,100", ErrBadPlan)
	}
	items := strings.Split(s, ",")
	steps := make([]int, 0, len(items))
	for i, item := range items {
		item = strings.TrimSpace(item)
		p, err := strconv.Atoi(strings.TrimSuffix(item, "%"))
		if err != nil {
			return nil, fmt.Errorf("%w: steps %q: item %d (%q) is not a whole percentage", ErrBadPlan, s, i+1, item)
		}
		steps = append(steps, p)
	}
	if err := CheckSteps(steps); err != nil {
		return nil, fmt.Errorf("%w (in %q)", err, s)
	}
	return steps, nil
}

// CheckSteps reports steps that are not a rollout's: empty, a percentage
// outside (0, 100], or not strictly increasing (wrapping ErrBadPlan).
func CheckSteps(steps []int) error {
	if len(steps) == 0 {
		return fmt.Errorf("%w: no steps", ErrBadPlan)
	}
	for i, p := range steps {
		if p <= 0 || p > 100 {
			return fmt.Errorf("%w: step %d is %d%%: want more than 0 and at most 100", ErrBadPlan, i+1, p)
		}
		if i > 0 && p <= steps[i-1] {
			return fmt.Errorf("%w: step %d (%d%%) does not raise the share of step %d (%d%%)", ErrBadPlan, i+1, p, i, steps[i-1])
		}
	}
	return nil
}
